"""The diffusion policy: temporal U-Net, noise scheduler, policy."""
