"""Item vectors float32[N, D]: pretrained text encoder, interaction-learned PPMI-SVD, or .npy."""
