"""The scripts work wherever cargo builds: they ask cargo for its target directory
(scripts/cargo-target-dir.sh, or `cargo metadata` in Python) instead of assuming ./target,
so a CARGO_TARGET_DIR (common in shared build setups) does not break them."""
import os
import re
import subprocess
from pathlib import Path

from conftest import REPO

# A path that starts at a literal `target` directory: `target/...`, `$PWD/target/...`,
# `REPO / "target"`, `"target/release"`. Names such as `$target_dir/` or `--target` do not match.
HARD_CODED = re.compile(r"""(?:^|[\s"'=(:]|\$PWD/|\$REPO/|\}/)target/|/\s*["']target["']""")


def hard_coded_target_lines(text):
    return [line for line in text.splitlines() if HARD_CODED.search(line)]


def test_the_pattern_catches_each_way_of_hard_coding_the_target_directory():
    for bad in ('exec target/release/ossc demo "$@"',
                'export OSSC_BIN="$PWD/target/debug/ossc"',
                "tee target/rust-tests.log",
                'REL = REPO / "target" / "release"',
                'OSSC_BIN = Path(os.environ.get("OSSC_BIN", REPO / "target/debug/ossc"))'):
        assert hard_coded_target_lines(bad), bad
    for good in ('exec "$(bash scripts/cargo-target-dir.sh)/release/ossc" demo "$@"',
                 'build=$target_dir/$triple/$profile_dir',
                 'args=(--locked --target "$triple.$GLIBC_BASELINE")',
                 "out = TARGET / \"bench\""):
        assert not hard_coded_target_lines(good), good


def test_no_script_or_test_helper_hard_codes_the_target_directory():
    files = sorted((REPO / "scripts").glob("*.sh")) + sorted((REPO / "scripts").glob("*.py"))
    files.append(REPO / "cluster-tests/python/conftest.py")
    offenders = {str(f.relative_to(REPO)): hard_coded_target_lines(f.read_text()) for f in files}
    offenders = {f: lines for f, lines in offenders.items() if lines}
    assert offenders == {}, offenders


def test_cargo_target_dir_follows_cargo_target_dir(tmp_path):
    env = dict(os.environ, CARGO_TARGET_DIR=str(tmp_path / "elsewhere"))
    out = subprocess.run(["bash", str(REPO / "scripts/cargo-target-dir.sh")], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    assert Path(out.stdout.strip()) == tmp_path / "elsewhere"
    env.pop("CARGO_TARGET_DIR")
    out = subprocess.run(["bash", str(REPO / "scripts/cargo-target-dir.sh")], env=env,
                         capture_output=True, text=True, check=True, timeout=120)
    assert Path(out.stdout.strip()) == REPO / "target"  # the repository has no .cargo/config.toml
