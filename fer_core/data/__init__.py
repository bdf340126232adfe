"""FER-2013 as tensors: reading both layouts, the disk cache, cleaning, the validation slice, augmentation."""
