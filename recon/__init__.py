"""The reconstruction pipeline and the ``sparsesplat`` CLI.

What lives here:
    pipeline.py        reconstruct(): scene -> initial points -> training -> evaluation -> run folder
    init.py            known-pose initialization (init_points.py: SIFT tracks triangulated; normalize.py)
    primitive_model.py the shared trainable-primitive machinery (raw params, Adam per param, edits, registry)
    kinds/             one module per primitive kind on it: gaussian, ges, triangle, convex (model, settings,
                       its own densification where it has one)
    trainer.py         the training loop (loss, SH ramp, regularizers, NaN guard, checkpoints)
    strategies/        densification of the Gaussian kinds: 3DGS adaptive density control, MCMC
    regularizers.py    DropGaussian, binocular consistency
    metrics.py         PSNR, SSIM (3DGS), LPIPS when available, masked variants
    export.py          cameras.json, transforms.json, COLMAP text model, side-by-side renders
    io.py              atomic file writing; progress.py the training progress bar; cli.py the commands

May import every other part of the project (rasterizer, datasets, priors, viewer).
"""
