"""Fermi-LAT point-source detection (seed 002): a multi-input U-Net with
k-means / LoG positions, judged against the 4FGL-DR2 sky simulated with a
documented LAT instrument model (notebook 04)."""
