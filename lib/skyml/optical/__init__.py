"""Optical star fields (MeerLICHT-like) for the cross-wavelength transfer of
notebook 06: simulation, the photutils DAOStarFinder baseline, and the U-Net +
LoG detector of :mod:`skyml.ctao` trained on them."""
