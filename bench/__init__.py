"""The benchmarks: ``python bench/bench.py`` (or ``python -m bench``) and its workers.

Not part of the installed packages; run from the repository root. Importing this
package imports nothing else, so every worker process loads only what it measures.
"""
