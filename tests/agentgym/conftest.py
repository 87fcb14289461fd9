import sys
from pathlib import Path

# The loopback server helper of the conformance tests (a plain module there, not a conftest).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "conformance"))
