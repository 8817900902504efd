"""skyml: shared helpers of the reproducible sky-map machine-learning notebooks.

Modules by concern:

- ``skyml.paths``      every file location, derived from the repository root
- ``skyml.cache``      datasets and models cached by a hash of their parameters
- ``skyml.results``    the per-notebook metrics files
- ``skyml.env``        environment report printed by the first notebook cell
- ``skyml.cta``        CTA real-time analysis: IRFs, simulation, DL3, models, baselines
- ``skyml.metrics``    metric functions shared by the analyses
- ``skyml.plotting``   one figure style, journal column widths
- ``skyml.io``         reading and validating user FITS / DL3 inputs
- ``skyml.cli``        the ``skyml`` command-line entry point
"""

__version__ = "0.1.0"

from . import env as _env

# TensorFlow's C++ start-up lines: quietened before anything imports it (see skyml.env)
_env.quiet_native_logs()
