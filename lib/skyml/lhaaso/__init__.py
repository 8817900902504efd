"""LHAASO KM2A resolution enhancement (notebook 08, seed 000): simulated
PSF-blurred sky maps, CNN/VAE/GAN deconvolution and classical baselines."""
