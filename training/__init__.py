"""DeepOrganSeg training: configs, data (MSD / nnU-Net / phantoms), losses, DDP training,
evaluation and export to the engine's model file. Depends on ``DeepOrganSegLib``, never the
other way round."""
