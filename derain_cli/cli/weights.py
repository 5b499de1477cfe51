"""``derain weights list|download|convert|info|export|export-onnx``: the weights the tool runs on.

Human-readable output goes to stderr (rich); ``--json`` writes data to stdout. Torch and the
weights library are imported inside the commands so that ``derain --help`` stays instant.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from derain_cli.cli.common import err_console, out_console, user_errors
from derain_cli.cli.options import DebugOption, json_option, overwrite_option

app = typer.Typer(no_args_is_help=True)

JsonOption = Annotated[bool, json_option("Write JSON to stdout instead of a table.")]


def _size(path: Path | None) -> str:
    if path is None or not path.is_file():
        return "-"
    size = float(path.stat().st_size)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def _write_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")


@app.command("list")
def list_cmd(
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """List registered weights: bundled in the package, cached from the Hub, or remote."""
    from rich.table import Table

    from derain_cli.weights.registry import listing, load_registry, no_default_message

    with user_errors(debug):
        registry = load_registry()
        keys = ("name", "arch", "size", "source", "status", "sha256", "description")
        rows = [
            {key: _size(row["local"]) if key == "size" else row[key] for key in keys}
            for row in listing(registry)
        ]
    if as_json:
        _write_json({"registry": str(registry.path), "weights": rows})
        return
    table = Table(title=f"weights registry ({registry.path})", title_justify="left")
    for column in ("name", "arch", "size", "source", "status"):
        table.add_column(column, overflow="fold")
    for row in rows:
        table.add_row(*(str(row[c]) for c in ("name", "arch", "size", "source", "status")))
    out_console.print(table)
    if registry.aliases.get("default", "missing") is None:
        err_console.print(f"note: {no_default_message()}", markup=False)


@app.command("download")
def download_cmd(
    name: Annotated[
        str, typer.Argument(help="A registered name, or hf://OWNER/REPO\\[@REVISION]\\[/FILE].")
    ],
    debug: DebugOption = False,
) -> None:
    """Fetch weights into the local cache (verified by sha256) and print the file's path."""
    from derain_cli.weights.loading import locate

    with user_errors(debug):
        found = locate(name, files=False)
    err_console.print(f"{name}: ready (sha256 {found.sha256})")
    sys.stdout.write(f"{found.path}\n")


@app.command("convert")
def convert_cmd(
    src: Annotated[
        Path, typer.Argument(help="The authors' checkpoint, e.g. nlcl-realrain-G_B.pth.")
    ],
    dest: Annotated[
        Path, typer.Argument(help="Output .safetensors file (a .sha256 sidecar is added).")
    ],
    overwrite: Annotated[bool, overwrite_option("Replace DEST if it exists.")] = False,
    debug: DebugOption = False,
) -> None:
    """Convert a torch .pth state dict into safetensors with derain metadata."""
    from derain_cli.errors import WeightsError
    from derain_cli.weights.files import convert_checkpoint

    with user_errors(debug):
        if dest.suffix.lower() != ".safetensors":
            raise WeightsError(f"{dest}: the output must end in .safetensors")
        digest = convert_checkpoint(src, dest, overwrite=overwrite)
    err_console.print(f"wrote {dest} (sha256 {digest})")


@app.command("export-onnx")
def export_onnx_cmd(
    output: Annotated[Path, typer.Option("-o", "--output", help="The .onnx file to write.")],
    spec: Annotated[
        str, typer.Argument(help="A registered name, a weights file or hf:// spec.")
    ] = "default",
    opset: Annotated[int, typer.Option("--opset", min=17, max=23, help="ONNX opset version.")] = 18,
    overwrite: Annotated[bool, overwrite_option("Replace OUTPUT if it exists.")] = False,
    debug: DebugOption = False,
) -> None:
    """Export G_B as ONNX: RGB float32 NCHW in [0, 1] in and out, dynamic batch and size."""
    from derain_cli.errors import UsageError

    with user_errors(debug):
        if output.exists() and not overwrite:
            raise UsageError(f"{output}: exists already (--overwrite replaces it)")
        from derain_cli.weights.loading import load_weights
        from derain_cli.weights.onnx_export import export_onnx

        done = export_onnx(load_weights(spec), output, opset=opset, overwrite=True)
    err_console.print(f"wrote {done.path} (opset {done.opset}, {_size(done.path)})")


@app.command("export")
def export_cmd(
    run_dir: Annotated[
        Path, typer.Argument(help="A training run folder (it holds checkpoint.pt).")
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "-o", "--output", help="Folder for the files (default: RUN_DIR).", show_default=False
        ),
    ] = None,
    ema: Annotated[
        bool | None,
        typer.Option(
            "--ema/--no-ema",
            help="G_B's moving average or its live weights (default: the run's train.export_ema).",
            show_default=False,
        ),
    ] = None,  # fmt: skip
    overwrite: Annotated[bool, overwrite_option("Replace files in --output.")] = False,
    debug: DebugOption = False,
) -> None:
    """Export G_B.safetensors and G_R.safetensors from a run's checkpoint, without training."""
    with user_errors(debug):
        from derain_cli.train.export import export_run

        background, rain, step = export_run(run_dir, output, ema=ema, overwrite=overwrite)
    err_console.print(f"wrote {background} and {rain} (step {step})")


@app.command("info")
def info_cmd(
    spec: Annotated[
        str, typer.Argument(help="A weights file, a registered name or an hf:// spec.")
    ],
    as_json: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show a weights file's architecture, hyper-parameters, size, metadata and sha256."""
    from rich.table import Table

    from derain_cli.weights.files import count_parameters
    from derain_cli.weights.loading import load_weights

    with user_errors(debug):
        loaded = load_weights(spec)
    info = {
        "source": loaded.source,
        "arch": loaded.arch,
        "hparams": loaded.hparams,
        "parameters": count_parameters(loaded.module),
        "sha256": loaded.sha256,
        "metadata": loaded.metadata,
    }
    if as_json:
        _write_json(info)
        return
    table = Table(show_header=False, title=loaded.source, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("arch", loaded.arch)
    table.add_row("hparams", json.dumps(loaded.hparams, sort_keys=True))
    table.add_row("parameters", f"{info['parameters']:,}")
    table.add_row("sha256", loaded.sha256)
    for key, value in sorted(loaded.metadata.items()):
        table.add_row(key, value)
    out_console.print(table)
