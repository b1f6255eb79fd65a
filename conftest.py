# Tests and nbval execute the notebooks at the smoke profile (sslkit.config reads SSLKIT_PROFILE);
# a notebook run that writes results puts them next to it in results/<name>.smoke.json.
import os

os.environ.setdefault("SSLKIT_PROFILE", "smoke")
