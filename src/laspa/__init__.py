"""laspa: training-free text-guided image editing with latent spatial alignment."""
