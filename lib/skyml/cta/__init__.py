"""CTA real-time analysis (seed talk by Di Piano et al.): IRFs from the public
CTA performance curves, simulation of short observations, DL3 event lists,
the CNN-Cleaner and CNN-Regressor models, and the classical baselines."""
