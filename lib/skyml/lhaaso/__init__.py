"""LHAASO KM2A resolution enhancement (notebook 08; the student project
of ``xwgong01/LHAASOSR`` and ``boobyuuuu/LHAI``): simulated
PSF-blurred sky maps, CNN/VAE/GAN deconvolution and classical baselines."""
