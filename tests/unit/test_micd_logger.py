import math

from nnunetv2.training.logging.nnunet_logger import LocalLogger

from nnunetv2_micd.training.micd_logger import METHOD_PROGRESS_FILE, MICDLocalLogger


def _nnunet_checkpoint(epochs: int) -> dict:
    """What nnU-Net's own logger holds after ``epochs`` epochs."""
    logger = LocalLogger()
    for epoch in range(epochs):
        for key in logger.my_fantastic_logging:
            logger.log(key, [0.5, 0.5] if key == "dice_per_class_or_region" else float(epoch), epoch)
    return logger.get_checkpoint()


def test_a_run_saved_without_a_method_key_resumes_one_value_per_epoch(tmp_path):
    logger = MICDLocalLogger(("loss_sup", "unsupervised_weight"))
    logger.load_checkpoint({**_nnunet_checkpoint(3), "loss_sup": [1.0, 0.9, 0.8]})
    assert all(math.isnan(v) for v in logger.my_fantastic_logging["unsupervised_weight"])

    for key in logger.my_fantastic_logging:
        logger.log(key, [0.5, 0.5] if key == "dice_per_class_or_region" else 0.1, 3)
    assert len(logger.my_fantastic_logging["unsupervised_weight"]) == 4
    assert logger.my_fantastic_logging["unsupervised_weight"][3] == 0.1  # at its epoch, not at the list's start
    logger.plot_progress_png(str(tmp_path))  # nnU-Net's picture covers every epoch (its shortest list)
    logger.plot_method_png(str(tmp_path))
    assert (tmp_path / "progress.png").is_file() and (tmp_path / METHOD_PROGRESS_FILE).is_file()


def test_a_method_with_one_panel_is_plotted(tmp_path):
    logger = MICDLocalLogger(("loss_sup",))
    logger.load_checkpoint({**_nnunet_checkpoint(2), "loss_sup": [1.0, 0.9]})
    logger.plot_method_png(str(tmp_path))
    assert (tmp_path / METHOD_PROGRESS_FILE).stat().st_size > 0
