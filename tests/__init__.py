"""vtdemo's tests, in layers: unit/, parity/, app/, browser/; helpers in support/ (see CONTRIBUTING.md)."""
