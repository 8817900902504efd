"""CTAO Galactic-plane survey toy (Pérez-Romero et al. 2025): U-Net + LoG (AutoSourceID-Light)
and dense centre-direction regression (CeDiRNet) on simulated survey patches,
against gammapy TS map + find_peaks (notebook 06)."""
