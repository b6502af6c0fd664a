"""Data quality: `uniedit audit` (checks.py), benchmark decontamination and input dedup (screen.py), the
fingerprints and indexes they share (fingerprint.py, index.py) and the benchmark readers (benchmarks.py).

Import the submodules directly: the synth engine uses only fingerprint/screen/benchmarks, and keeping this
package empty keeps the audit's heavier imports (datasketch, its scipy parts) out of every worker."""
