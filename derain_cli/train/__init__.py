"""NLCL training: ``step`` (one D-then-G update), ``loop`` (the run), ``checkpoint`` (atomic
resumable state), ``distributed`` (data-parallel ranks), ``launch`` (1 process, N spawned ranks
or torchrun), ``ema`` and ``plots`` (sample grids, loss curves)."""
