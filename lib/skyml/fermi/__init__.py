"""Fermi-LAT point-source detection (Bhattacharyya et al., Fermi-LAT catalog meeting 2022): a multi-input U-Net with
k-means / LoG positions, judged against the 4FGL-DR2 sky simulated with a
documented LAT instrument model (notebook 04)."""
