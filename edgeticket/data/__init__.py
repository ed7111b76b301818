"""NYU Depth v2 readers, the split, download, synthetic rooms, the training cache, augmentation."""
