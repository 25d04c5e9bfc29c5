"""What the local stack needs on the machine: checked before anything is installed.

`python3 -m infra.prerequisites` runs with the system Python (the Makefile calls it before the
virtual environment exists), so this module imports only the standard library.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIREBASE_BIN = ROOT / "node_modules" / ".bin" / "firebase"
EMULATOR_COMPONENTS = {
    "cloud-firestore-emulator": "Firestore emulator",
    "pubsub-emulator": "Pub/Sub emulator",
}


class PrerequisiteMissing(SystemExit):
    """A tool the stack needs is not installed; the message says how to get it."""


def _major_version(command: list[str], pattern: str) -> int:
    """The major version `command` prints, or 0 if it is missing or says nothing we know."""
    if shutil.which(command[0]) is None:
        return 0
    try:
        ran = subprocess.run(command, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    found = re.search(pattern, ran.stdout + ran.stderr)
    return int(found.group(1)) if found else 0


def check_prerequisites(firebase_tools: bool = True) -> Path:
    """Fail at once, saying what to install, if Java, Node, the gcloud emulators or (with
    `firebase_tools`) the npm-installed firebase-tools are missing. Returns the SDK root."""
    missing = []
    if _major_version(["java", "-version"], r'version "(\d+)') < 17:
        missing.append("Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
    if _major_version(["node", "--version"], r"v(\d+)") < 20 or shutil.which("npm") is None:
        missing.append("Node.js 20+ with npm (https://nodejs.org; Debian: apt-get install npm)")
    elif firebase_tools and not FIREBASE_BIN.exists():
        missing.append("firebase-tools: run `make install` (npm ci, into node_modules/)")
    gcloud = shutil.which("gcloud")
    sdk_root = Path(os.path.realpath(gcloud)).parent.parent if gcloud else None
    if sdk_root is None:
        missing.append(
            "the Google Cloud CLI (https://cloud.google.com/sdk/docs/install), with "
            "`gcloud components install cloud-firestore-emulator pubsub-emulator beta`"
        )
    else:
        for component, what in EMULATOR_COMPONENTS.items():
            if not (sdk_root / "platform" / component).is_dir():
                missing.append(
                    f"the {what}: `gcloud components install {component}` "
                    f"(Debian: apt-get install google-cloud-cli-{component})"
                )
    if missing:
        raise PrerequisiteMissing("Mnemo's local stack needs:\n  - " + "\n  - ".join(missing))
    assert sdk_root is not None
    return sdk_root


if __name__ == "__main__":
    check_prerequisites(firebase_tools=False)
