"""CTAO Galactic-plane survey toy (seed 004): U-Net + LoG (AutoSourceID-Light)
and dense centre-direction regression (CeDiRNet) on simulated survey patches,
against gammapy TS map + find_peaks (notebook 06)."""
