"""edgekd bundle: a self-contained on-device benchmark folder (and .zip) from an artifact directory."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "make an on-device benchmark bundle (models, evaluation set, run.py) for a device profile"
DESCRIPTION = """\
Write BUNDLE/ and BUNDLE.zip from OUT_DIR (an `edgekd build` artifact directory) for the device
profile PROFILE: the model(s) of the profile's precision, a compact evaluation set (clean and
perturbed test images with labels and the teacher's predictions, .npz), run.py and a README.
On the device, with only Python, numpy and onnxruntime installed:

    python run.py            # prints a table, writes results.json

then `edgekd report OUT_DIR --device-results results.json` merges the results into the report
and `edgekd gate OUT_DIR` checks them against the profile's budgets. docs/devices.md has more.
An existing BUNDLE/ or BUNDLE.zip is replaced only when it is an earlier edgekd bundle holding
nothing edgekd did not write (a results.json left by run.py counts as yours); anything else is
refused. Exit codes: 0 written, 2 usage or input error (a folder that cannot be written included)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out_dir", help="artifact directory of `edgekd build`")
    p.add_argument("--device", required=True, metavar="PROFILE",
                   help="device profile: a name from `edgekd devices` or a .toml path")
    p.add_argument("-o", "--out", metavar="BUNDLE", help="bundle folder (default: bundle-PROFILE)")
    p.add_argument("--first-images", type=int, metavar="N", help="the evaluation set: the first N test "
                   "images of the build's sweep (default 500)")
    p.add_argument("--max-images", type=int, metavar="N", help="deprecated name of --first-images")
    p.add_argument("--perturb", metavar="NAME,...", help="perturbed sets at --severity (default: "
                   "gaussian_noise,defocus_blur,contrast,jpeg_compression,occlusion; 'none' for clean only)")
    p.add_argument("--severity", type=int, default=3, choices=range(1, 6), metavar="1..5",
                   help="severity of the perturbed sets (default 3)")
    p.add_argument("--no-zip", action="store_true", help="do not write BUNDLE.zip")


def first_images(args: argparse.Namespace) -> int:
    """--first-images, or its deprecated name --max-images (one warning line on stderr)."""
    import sys

    from ..errors import ConfigError

    if args.max_images is None:
        return 500 if args.first_images is None else args.first_images
    if args.first_images is not None:
        raise ConfigError("both --max-images (deprecated) and --first-images are given; keep --first-images")
    print("edgekd: warning: --max-images is deprecated; use --first-images (the first N test images, "
          "unlike robustness.sample_images, a seeded random subset)", file=sys.stderr)
    return args.max_images


def run(args: argparse.Namespace) -> int:
    from ..bundle import DEFAULT_PERTURBATIONS, make_bundle
    from ..device_profiles import load_profile
    from ..perturb import resolve

    first = first_images(args)
    profile = load_profile(args.device)
    if args.perturb is None:
        names = DEFAULT_PERTURBATIONS
    elif args.perturb.strip() == "none":
        names = ()
    else:
        names = tuple(resolve([t.strip() for t in args.perturb.split(",") if t.strip()]))
    dest = Path(args.out or f"bundle-{profile.name}")
    rec = make_bundle(Path(args.out_dir), profile, dest, first, names, args.severity,
                      make_zip=not args.no_zip)
    size = sum(p.stat().st_size for p in Path(rec["dir"]).rglob("*") if p.is_file())
    print(f"bundle for {profile.name}: {dest}/ ({size / 1e6:.2f} MB)"
          + (f" and {Path(rec['zip']).name} ({Path(rec['zip']).stat().st_size / 1e6:.2f} MB)" if "zip" in rec else ""))
    for m in rec["models"]:
        print(f"  {m['file']:28s} {m['size_bytes']:>10,} B{'  (deployed)' if m['primary'] else ''}")
    print(f"  eval.npz: {rec['eval']['n_images']} images x {len(rec['eval']['sets'])} sets "
          f"({', '.join(rec['eval']['sets'])})")
    for note in rec["eval"]["notes"]:
        print(f"  note: {note}")
    print(f"on the device: cd {dest.name} && python run.py   (needs {rec['requires']})")
    return 0
