"""The pipeline's stages as library calls: each module has ``Config`` (the stage's run config, from
:mod:`vlmdiff.run_config`) and ``run(cfg)`` (what its command line runs once the settings are resolved). The
stage's code lives here; its command line (:mod:`vlmdiff.cli`) only resolves the settings and calls ``run``.
Each module imports torch inside its functions only.

| module | stage | command |
|---|---|---|
| :mod:`vlmdiff.pipelines.caption` | caption the images with a VLM | ``captioner.py``, ``vlmdiff caption`` |
| :mod:`vlmdiff.pipelines.finetune_autoencoder` | finetune the autoencoder | ``finetune_autoencoder.py`` |
| :mod:`vlmdiff.pipelines.assemble` | the training-start checkpoint | ``build_model.py``, ``vlmdiff build-model`` |
| :mod:`vlmdiff.pipelines.train` | train the SGN and the UNet decoder | ``train.py``, ``vlmdiff train`` |
| :mod:`vlmdiff.pipelines.test` | test and report the metrics | ``test.py``, ``vlmdiff test`` |
| :mod:`vlmdiff.pipelines.predict` | score unlabeled images | ``test.py --predict``, ``vlmdiff predict`` |
| :mod:`vlmdiff.pipelines.demo` | the whole pipeline at toy size on a CPU | ``scripts/demo.py``, ``vlmdiff demo`` |

    from vlmdiff.pipelines import train
    train.run(train.Config(data_path="data/mvtec", max_epochs=1))

The demo chains the other stages' ``run`` with their ``Config``.
"""

STAGES = ("caption", "finetune_autoencoder", "assemble", "train", "test", "predict", "demo")
