"""Networks: generators (registry of architectures), discriminator, projection heads."""
