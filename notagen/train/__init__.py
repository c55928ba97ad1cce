"""Training: typed YAML recipes (`recipe`), the pretrain/finetune loop with DDP and exact resume (`loop`), plots.

`notagen train RECIPE.yaml key=value…` runs `loop.train_command`; `notagen plot-loss RUN_DIR` runs
`plot.plot_loss_command`. Submodules are imported on use so `import notagen.train` stays light.
"""
