"""``musicssl export-onnx MODEL -o model.onnx``: a key or ZeroNS network as ONNX.

Examples::

    musicssl export-onnx skey-debian -o skey-debian.onnx
    musicssl export-onnx ../shared/fixtures/skey.pt -o skey.onnx      # calibrated first
    musicssl export-onnx zerons -o zerons.onnx                         # the shipped beat model
    musicssl key song.flac --checkpoint skey-debian.onnx               # runs on onnxruntime
"""

from __future__ import annotations

import argparse
import sys

from musicssl.cli.common import usage_error


def add_parser(subparsers, name: str = "export-onnx",
               help_text: str = "export a key or ZeroNS beat network to ONNX"):
    """Register ``musicssl export-onnx`` on ``subparsers``."""
    p = subparsers.add_parser(
        name, help=help_text, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Export a key network (shipped name, .safetensors or released .pt; calibration and "
                    "front-end settings go into the ONNX metadata) or the ZeroNS beat networks ('zerons' "
                    "or a ZeroNS .safetensors) to ONNX. Needs the onnx extra: pip install 'musicssl[onnx]'.",
        epilog=__doc__.split("Examples::", 1)[1])
    p.add_argument("model", metavar="MODEL",
                   help="key model name (e.g. skey-debian), key checkpoint, 'zerons' or a ZeroNS checkpoint")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="the .onnx file to write (atomically)")
    p.set_defaults(func=run, _parser=p)
    return p


def run(args) -> int:
    from musicssl.export import export_onnx

    if not str(args.output).lower().endswith(".onnx"):
        return usage_error(args, "export-onnx", f"the output file must end in .onnx, got {args.output!r}")
    path, kind = export_onnx(args.model, args.output)
    print(f"musicssl export-onnx: wrote the {kind} network(s) of {args.model} to {path}", file=sys.stderr)
    return 0
