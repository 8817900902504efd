"""Radio source counts below the detection threshold (notebook 07; Todarello et al.
2023, arXiv 2306.15720):
an analytic EMU-like count law and its modifications, simulated sky-model and
restored interferometric images, a CNN regressing N(s) per flux bin, and the
classical P(D) analysis."""
