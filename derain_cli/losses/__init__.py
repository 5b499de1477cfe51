"""The NLCL objective, one paper term per module (table in ``docs/method.md``).

- :mod:`.decomposition` -- Eq. 2: self-consistency ``||B + R - O||^2`` and ``lambda ||R||_1``
- :mod:`.adversarial` -- Eq. 3: the adversarial prior P_b(B) (LSGAN)
- :mod:`.layer_contrast` -- Eq. 5: layer contrast between B and R patches (D encoder)
- :mod:`.location_contrast` -- Eq. 6: location contrast between B and O (G_B encoder)
- :mod:`.fidelity` -- not in the paper: low-frequency consistency ``|A_k(B) - A_k(O)|``
- :mod:`.objective` -- Eq. 4: :class:`NLCLObjective`, which owns every trainable network
"""

from __future__ import annotations

from derain_cli.losses.adversarial import lsgan_discriminator_loss, lsgan_generator_loss
from derain_cli.losses.decomposition import (
    background_fidelity_loss,
    consistency_loss,
    rain_sparsity_loss,
)
from derain_cli.losses.fidelity import lowfreq_consistency_loss
from derain_cli.losses.layer_contrast import multi_positive_infonce, supcon_loss
from derain_cli.losses.location_contrast import patch_nce_loss
from derain_cli.losses.objective import NLCLObjective

__all__ = [
    "NLCLObjective",
    "background_fidelity_loss",
    "consistency_loss",
    "lsgan_discriminator_loss",
    "lsgan_generator_loss",
    "lowfreq_consistency_loss",
    "multi_positive_infonce",
    "patch_nce_loss",
    "rain_sparsity_loss",
    "supcon_loss",
]
