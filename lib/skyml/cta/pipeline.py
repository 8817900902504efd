"""Train-or-load steps of the CTA analysis, cached by a hash of their inputs.

Notebooks 02 and 03 call these functions; each returns the same trained model
for the same simulation parameters, split sizes, seed and hyper-parameters,
training it the first time and loading it from ``data/cache/`` afterwards. A
trained model is also installed under ``data/models/<profile>/`` where the
``skyml cta-clean`` and ``skyml cta-localise`` commands find it.
"""

from __future__ import annotations

import numpy as np

from ..training import train_cached
from . import models
from .simulate import CTASimParams, background_for, load_maps, map_wcs

CLEANER_FILE = "cta_cleaner.keras"
TALK_SMOOTH_CLEANER_FILE = "cta_cleaner_talk_smooth.keras"
BACKGROUND_NORMALISER_FILE = "cta_background_normaliser.keras"
LOCALISER_FILE = "cta_localiser.keras"
TALK_REGRESSOR_FILE = "cta_talk_regressor.keras"


def cleaner_inputs(maps: dict, smooth_sigma_px: float = 0.0, index=slice(None)):
    """Network input, target and stretch scale of the CNN-Cleaner.

    Input: the raw counts map, optionally smoothed, linearly stretched to
    [0, 1] by its maximum (the talk's preprocessing). Target: the true source
    counts map ("clean"), smoothed the same way and divided by the *same*
    scale, so that ``prediction * scale`` is a cleaned map in counts.
    """
    counts = models.smooth(maps["counts"][index], smooth_sigma_px)
    clean = models.smooth(maps["source_counts"][index], smooth_sigma_px)
    x, scale = models.stretch(counts)
    y = np.clip(clean / scale[:, None, None], 0.0, 1.0).astype(np.float32)
    return x, y, scale


def position_labels(maps: dict, index=slice(None)) -> np.ndarray:
    """Normalised (x, y) labels of the true source positions."""
    shape = maps["counts"].shape[1:]
    return models.pix_to_label(maps["src_x_pix"][index], maps["src_y_pix"][index], shape)


def labels_to_sky(maps: dict, labels: np.ndarray, index=slice(None)):
    """Sky positions (ra, dec) [deg] of predicted normalised labels, through
    each map's own WCS (centred on its pointing)."""
    shape = maps["counts"].shape[1:]
    x, y = models.label_to_pix(labels, shape)
    pnt_ra, pnt_dec = maps["pnt_ra_deg"][index], maps["pnt_dec_deg"][index]
    ra = np.empty(len(x))
    dec = np.empty(len(x))
    for i in range(len(x)):
        sky = map_wcs(pnt_ra[i], pnt_dec[i], shape[0]).pixel_to_world(x[i], y[i])
        ra[i], dec[i] = sky.ra.deg, sky.dec.deg
    return ra, dec


ORIENTATIONS = (1, 8)  # readouts of the localiser: the map as given, or the median over its 8 orientations


def orient(maps: np.ndarray, k: int) -> np.ndarray:
    """Orientation ``k`` (0-7) of square maps ``(n, ny, nx[, c])``: bit 0 of
    ``k`` transposes them, bit 1 flips them left-right, bit 2 up-down, in that
    order (the convention of :class:`skyml.cta.models.RandomDihedral`)."""
    if not 0 <= int(k) < 8:
        raise ValueError(f"orientation {k} is not one of 0-7")
    out = np.asarray(maps)
    if out.shape[1] != out.shape[2]:
        raise ValueError(f"orientations need square maps, got {out.shape[1]} x {out.shape[2]}")
    if k & 1:
        out = np.swapaxes(out, 1, 2)
    if k & 2:
        out = out[:, :, ::-1]
    if k & 4:
        out = out[:, ::-1]
    return np.ascontiguousarray(out)


def unorient_labels(labels: np.ndarray, k: int) -> np.ndarray:
    """Normalised ``(x, y)`` labels found on maps in orientation ``k``
    (:func:`orient`), mapped back to the frame of the maps as given (through
    :class:`skyml.cta.models.UndoDihedral`, so training and readout share one
    convention)."""
    import keras

    labels = np.asarray(labels, np.float32)
    choice = np.broadcast_to(np.array([k & 1, (k >> 1) & 1, (k >> 2) & 1], np.float32), (len(labels), 3))
    return keras.ops.convert_to_numpy(models.UndoDihedral()([labels, choice])).astype(np.float32)


def localise(model, counts: np.ndarray, orientations: int = 1, batch_size: int = 64):
    """Normalised ``(x, y)`` source positions ``(n, 2)`` of the heat-map
    localiser ``model`` on counts maps ``(n, ny, nx)`` (a list of them for a
    model with several outputs, e.g. readouts sharing one heat map).

    ``orientations=8``: the median, coordinate by coordinate, of the
    positions found on the map's 8 rotations by 90 degrees and flips
    (:func:`orient`), each mapped back (test-time augmentation: the PSF and
    background of the simulation are symmetric under these operations, so
    each is as valid a view of the sky as the map itself, and the network's
    errors on them are partly independent). The median, not the mean: where
    the network picks a wrong peak in one or two orientations, the mean of
    the 8 is pulled towards it and the median is not (on notebook 03's
    validation maps the two gave the same 68 % error and the mean more maps
    off by more than 0.1 deg). ``orientations=1``: the map as given."""
    if orientations not in ORIENTATIONS:
        raise ValueError(f"orientations must be one of {ORIENTATIONS}, got {orientations!r}")
    x = models.preprocess_localiser_input(counts)
    views = []
    for k in range(orientations):
        out = model.predict(orient(x, k), batch_size=batch_size, verbose=0)
        views.append([unorient_labels(o, k) for o in (out if isinstance(out, list) else [out])])
    medians = [np.median(np.stack(v), axis=0).astype(np.float32) for v in zip(*views)]
    return medians if isinstance(out, list) else medians[0]


def _sim_key(n_train, n_val, seed, params: CTASimParams):
    return {"n_train": int(n_train), "n_val": int(n_val), "seed": int(seed), "sim": params.to_dict()}


def train_cleaner(n_train, n_val, seed, params: CTASimParams, *, epochs, batch_size=32, patience=3,
                  smooth_sigma_px=0.0, profile="quick", history_needed=True):
    """The talk's CNN-Cleaner trained on ``n_train`` maps (validation ``n_val``).
    ``history_needed=False``: the caller draws no learning curve, so the
    published full-profile model is used even where its sidecar has none."""
    key = {**_sim_key(n_train, n_val, seed, params), "epochs": int(epochs), "batch_size": int(batch_size),
           "patience": int(patience), "smooth_sigma_px": float(smooth_sigma_px), "version": 1}

    def fit():
        train = load_maps(n_train, seed, params, split="train")
        val = load_maps(n_val, seed, params, split="val")
        x, y, _ = cleaner_inputs(train, smooth_sigma_px)
        xv, yv, _ = cleaner_inputs(val, smooth_sigma_px)
        import keras

        keras.utils.set_random_seed(int(seed))
        model = models.build_cleaner(x.shape[1:] + (1,))
        history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size,
                               patience=patience, seed=seed, verbose=2)
        meta = {"task": "cta-clean", "smooth_sigma_px": float(smooth_sigma_px),
                "target": "true source counts / input stretch scale", "n_train": int(n_train),
                "profile": profile, "npix": int(params.npix), "binsz_deg": float(params.binsz_deg), "sim_params": params.to_dict()}
        return model, meta, history

    install_as = CLEANER_FILE if smooth_sigma_px == 0 else TALK_SMOOTH_CLEANER_FILE
    return train_cached("cta_cleaner", key, fit, profile, install_as, history_needed=history_needed)


def train_background_normaliser(n_train, n_val, seed, params: CTASimParams, *, epochs, batch_size=32,
                                patience=10, filters=16, profile="quick"):
    """The learned field-of-view background fit (:func:`models.build_background_normaliser`)
    trained on ``n_train`` maps to predict ``log(bkg_norm)``, the true background's
    normalisation against the IRF template, with early stopping on ``n_val`` maps."""
    key = {**_sim_key(n_train, n_val, seed, params), "epochs": int(epochs), "batch_size": int(batch_size),
           "patience": int(patience), "filters": int(filters), "version": 3}

    def fit():
        train = load_maps(n_train, seed, params, split="train")
        val = load_maps(n_val, seed, params, split="val")
        x = models.background_normaliser_inputs(train["counts"], background_for(train))
        xv = models.background_normaliser_inputs(val["counts"], background_for(val))
        y = np.log(train["bkg_norm"]).astype(np.float32)[:, None]
        yv = np.log(val["bkg_norm"]).astype(np.float32)[:, None]
        import keras

        keras.utils.set_random_seed(int(seed))
        model = models.build_background_normaliser(x.shape[1:], filters=filters)
        history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size,
                               patience=patience, seed=seed, verbose=2)
        meta = {"task": "cta-background-norm", "target": "log(true background / IRF template)",
                "n_train": int(n_train), "profile": profile, "npix": int(params.npix),
                "binsz_deg": float(params.binsz_deg), "sim_params": params.to_dict()}
        return model, meta, history

    return train_cached("cta_background_normaliser", key, fit, profile, BACKGROUND_NORMALISER_FILE)


def background_norms(model, counts: np.ndarray, templates: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Background normalisation per map predicted by the learned FoV fit."""
    x = models.background_normaliser_inputs(counts, templates)
    return np.exp(model.predict(x, batch_size=batch_size, verbose=0)[:, 0]).astype(float)


def clean_counts(model, counts: np.ndarray, smooth_sigma_px: float = 0.0, batch_size: int = 64,
                 chunk_batches: int = 16) -> np.ndarray:
    """Cleaned maps in counts: ``prediction * stretch scale`` of the raw counts,
    float32. Maps go through in chunks of ``chunk_batches`` prediction batches
    (each map is smoothed and stretched on its own, so the result does not
    depend on the chunking), which bounds the memory to the output and one chunk."""
    counts = np.asarray(counts)
    out = np.empty(counts.shape[:3], dtype=np.float32)
    step = int(batch_size) * max(int(chunk_batches), 1)
    for start in range(0, len(counts), step):
        x, scale = models.stretch(models.smooth(counts[start:start + step], smooth_sigma_px))
        pred = model.predict(models.as_images(x), batch_size=batch_size, verbose=0)[..., 0]
        out[start:start + step] = pred * scale[:, None, None]
    return out


def train_talk_regressor(n_train, n_val, seed, params: CTASimParams, cleaner, *, epochs, batch_size=32,
                         patience=3, smooth_sigma_px=0.0, dense_units=10000, profile="quick",
                         cleaner_key=None):
    """The talk's CNN-Regressor, trained on maps denoised by the CNN-Cleaner
    (the talk's preprocessing), labels normalised to [0, 1]."""
    key = {**_sim_key(n_train, n_val, seed, params), "epochs": int(epochs), "batch_size": int(batch_size),
           "patience": int(patience), "smooth_sigma_px": float(smooth_sigma_px),
           "dense_units": int(dense_units), "cleaner": cleaner_key, "version": 1}

    def fit():
        train = load_maps(n_train, seed, params, split="train")
        val = load_maps(n_val, seed, params, split="val")
        x = talk_regressor_inputs(cleaner, train["counts"], smooth_sigma_px)
        xv = talk_regressor_inputs(cleaner, val["counts"], smooth_sigma_px)
        import keras

        keras.utils.set_random_seed(int(seed))
        model = models.build_talk_regressor(x.shape[1:], dense_units=dense_units)
        history = models.train(model, x, position_labels(train), xv, position_labels(val),
                               epochs=epochs, batch_size=batch_size, patience=patience, seed=seed, verbose=2)
        meta = {"task": "cta-localise-talk", "input": "stretch(CNN-Cleaner output)",
                "smooth_sigma_px": float(smooth_sigma_px), "n_train": int(n_train), "profile": profile,
                "npix": int(params.npix), "binsz_deg": float(params.binsz_deg), "sim_params": params.to_dict()}
        return model, meta, history

    return train_cached("cta_talk_regressor", key, fit, profile, TALK_REGRESSOR_FILE)


def talk_regressor_inputs(cleaner, counts: np.ndarray, smooth_sigma_px: float = 0.0) -> np.ndarray:
    """The talk's regressor input: the CNN-Cleaner output, stretched to [0, 1]."""
    cleaned = clean_counts(cleaner, counts, smooth_sigma_px)
    return models.as_images(models.stretch(cleaned)[0])


def localiser_params(params: CTASimParams, flux_max_crab: float = 10.0) -> CTASimParams:
    """The simulation the heat-map localiser is trained on: ``params`` with
    sources up to ``flux_max_crab`` (the test maps stop at ``params.flux_max_crab``),
    so that bright sources are inside the training range."""
    from dataclasses import replace

    return replace(params, flux_max_crab=max(float(flux_max_crab), params.flux_max_crab))


def localiser_training_maps(n_maps, seed, params: CTASimParams, split: str, shift=None) -> dict:
    """The localiser's training (``split="train"``) or validation maps: those of
    ``params`` (:func:`skyml.cta.simulate.load_maps`), or, with a
    :class:`skyml.cta.simulate.CTAShift` ``shift``, maps of the same curve sets
    with the PSF, effective area, spectrum and placement drawn per map as
    ``shift`` says (domain randomisation; :func:`skyml.cta.simulate.load_shifted_maps`)."""
    from .simulate import load_shifted_maps

    if shift is None:
        return load_maps(n_maps, seed, params, split=split)
    return load_shifted_maps(n_maps, seed, params, shift, split=split)


def train_improved_localiser(n_train, n_val, seed, params: CTASimParams, *, epochs, batch_size=32,
                             patience=3, learning_rate=1e-3, subcell_offsets=True, full_resolution_head=False,
                             window=0, readout="softmax", dihedral_augment=False, matched_filter_size=0,
                             train_shift=None, continue_epochs=0, continue_learning_rate=2.5e-4,
                             continue_lr_patience=1, randomise_epochs=0, randomise_params=None, randomise_shift=None,
                             randomise_learning_rate=2.5e-4, widen_epochs=0, widen_params=None, widen_shift=None,
                             widen_continue_epochs=0, widen_continue_learning_rate=6.25e-5, profile="quick"):
    """The heat-map + soft-argmax localiser of this repository, on raw counts,
    trained on the maps of ``params`` (see :func:`localiser_params`).

    ``full_resolution_head``, ``dihedral_augment`` and ``matched_filter_size``
    are those of :func:`skyml.cta.models.build_improved_localiser`;
    ``train_shift`` (a :class:`skyml.cta.simulate.CTAShift` or None)
    randomises the training and validation maps (:func:`localiser_training_maps`).
    Left at their defaults they do not enter the cache key, so models trained
    before they existed are found again. ``window`` and ``readout`` act at
    inference only (:func:`skyml.cta.models.with_readout`): they are not part
    of the cache key, the cached and installed model keeps the soft-argmax of
    its training, and the model returned reads its heat map with them.

    ``continue_epochs`` > 0: the model of ``epochs`` epochs (cached, or the
    published one) trains on for up to that many more epochs, its optimizer
    state kept but its learning rate set to ``continue_learning_rate``, and
    halved after ``continue_lr_patience`` epochs without a validation loss
    1e-4 below the best (:func:`skyml.training.halve_on_plateau`; at this
    network's loss of about 0.004, after nearly every epoch: an annealing
    of the rate); the weights of the epoch with the
    lowest validation loss, the first ``epochs`` included, are kept. A
    separate cache key, so the shorter training stays as it was.

    ``randomise_epochs`` > 0: the model of the stages above (cached, or the
    published one) then trains for up to that many epochs on a randomised
    sky: ``n_train`` maps of ``randomise_params`` with the per-map draws of
    the :class:`skyml.cta.simulate.CTAShift` ``randomise_shift`` (PSF,
    effective area, spectrum, sources up to the borders; domain
    randomisation), from ``randomise_learning_rate``, halved as above, with
    early stopping on ``n_val`` validation maps of the same randomised sky.
    The epoch with the lowest validation loss is kept, unless the model it
    started from scores lower on those validation maps, which then stays.
    Its own cache key again.

    ``widen_epochs`` > 0 (after a randomised stage): the same once more, from
    the randomised stage's model, on the wider sky of ``widen_params`` and
    ``widen_shift`` (a curriculum: the network meets the widest responses
    last, starting from one that already handles the borders). Metadata
    ``widened_from`` records its start as ``randomised_from`` does.

    ``widen_continue_epochs`` > 0 (after a wider stage): that stage's model
    trains on for up to that many more epochs on the same wider sky, from
    ``widen_continue_learning_rate`` (by default the rate the wider stage
    reached when its loss was still falling at its epoch cap), halved as
    above, with early stopping; the weights of its best epoch are kept unless
    the wider stage's model scores lower on that sky's validation maps.
    Without it a longer wider stage would be a new key that trains again from
    the randomised model. Metadata ``widen_continued_from`` records its start."""
    key = {**_sim_key(n_train, n_val, seed, params), "epochs": int(epochs), "batch_size": int(batch_size),
           "patience": int(patience), "learning_rate": float(learning_rate),
           "subcell_offsets": bool(subcell_offsets), "version": 2}
    extra = {"full_resolution_head": bool(full_resolution_head), "dihedral_augment": bool(dihedral_augment), "matched_filter_size": int(matched_filter_size),
             "train_shift": None if train_shift is None else train_shift.to_dict()}
    defaults = {"full_resolution_head": False, "dihedral_augment": False, "matched_filter_size": 0,
                "train_shift": None}
    key.update({k: v for k, v in extra.items() if v != defaults[k]})

    def data():
        """(inputs, labels, validation inputs, validation labels)"""
        train = localiser_training_maps(n_train, seed, params, "train", train_shift)
        val = localiser_training_maps(n_val, seed, params, "val", train_shift)
        return (models.preprocess_localiser_input(train["counts"]), position_labels(train),
                models.preprocess_localiser_input(val["counts"]), position_labels(val))

    def fit():
        x, y, xv, yv = data()
        import keras

        keras.utils.set_random_seed(int(seed))
        model = models.build_improved_localiser(x.shape[1:], learning_rate=learning_rate,
                                                subcell_offsets=subcell_offsets,
                                                full_resolution_head=full_resolution_head,
                                                dihedral_augment=dihedral_augment,
                                                matched_filter_size=matched_filter_size, seed=seed)
        history = models.train(model, x, y, xv, yv, epochs=epochs, batch_size=batch_size, patience=patience,
                               seed=seed, verbose=2)
        meta = {"task": "cta-localise", "input": models.LOCALISER_INPUT, "n_train": int(n_train),
                "subcell_offsets": bool(subcell_offsets), **extra,
                "profile": profile, "npix": int(params.npix), "binsz_deg": float(params.binsz_deg), "sim_params": params.to_dict()}
        return model, meta, history

    def train_further(base_key_, base_fit_, maps, epochs_, rate, reference_of=None):
        """The cached model of ``base_key_`` trained for up to ``epochs_`` more
        epochs on ``maps`` (x, y, x_val, y_val) from the learning rate ``rate``;
        its weights are kept where no epoch scored below the reference on the
        validation maps: ``reference_of(base model)``, by default the base's own
        best. Returns the model, the base's metadata to inherit, a record of the
        base, and the joined history."""
        base, base_meta, base_history, _ = train_cached("cta_localiser", base_key_, base_fit_, profile, LOCALISER_FILE)
        reference = min(base_history["val_loss"]) if reference_of is None else reference_of(base)
        kept = base.get_weights()
        base.optimizer.learning_rate.assign(float(rate))
        more = models.train(base, *maps, epochs=epochs_, batch_size=batch_size, patience=patience,
                            seed=seed, verbose=2, reduce_lr_patience=continue_lr_patience)
        if min(more["val_loss"]) >= reference:
            base.set_weights(kept)  # no further epoch beat the model it started from on validation
        history = {k: list(base_history.get(k, [])) + v for k, v in more.items()}
        dropped = ("train_seconds", "cache_key", "saved_with", "keras_sha256", "history", "adopted_from")
        origin = {"epochs": len(base_history["loss"]), "keras_sha256": base_meta.get("keras_sha256"),
                  "train_seconds": base_meta.get("train_seconds")}
        return base, {k: v for k, v in base_meta.items() if k not in dropped}, origin, history

    def fit_more():
        model, meta, origin, history = train_further(key, fit, data(), continue_epochs, continue_learning_rate)
        meta = {**meta, "continued_from": origin, "continue_epochs": int(continue_epochs),
                "continue_learning_rate": float(continue_learning_rate),
                "continue_lr_patience": int(continue_lr_patience)}
        return model, meta, history

    if continue_epochs:
        base_key = {**key, "continue_epochs": int(continue_epochs), "continue_learning_rate": float(continue_learning_rate),
                    "continue_lr_patience": int(continue_lr_patience)}
        base_fit = fit_more
    else:
        base_key, base_fit = key, fit

    def randomised_stage(from_key, from_fit, epochs_, sky_params, shift, name, origin_name,
                         rate=randomise_learning_rate):
        """(fit function, sky record) of a stage on the sky of ``sky_params`` and
        ``shift`` that trains the model of ``from_key`` further; ``name`` prefixes
        its metadata, ``origin_name`` names the record of the model it started from."""
        sky = {"params": sky_params.to_dict(), "shift": shift.to_dict()}

        def fit_stage():
            train = localiser_training_maps(n_train, seed, sky_params, "train", shift)
            val = localiser_training_maps(n_val, seed, sky_params, "val", shift)
            maps = (models.preprocess_localiser_input(train["counts"]), position_labels(train),
                    models.preprocess_localiser_input(val["counts"]), position_labels(val))
            start = {}

            def start_loss(base):  # the bar: the starting model on this sky's validation maps
                start["loss"] = models.validation_loss(base, maps[2], maps[3])
                return start["loss"]

            model, meta, origin, history = train_further(from_key, from_fit, maps, epochs_, rate,
                                                         reference_of=start_loss)
            meta = {**meta, origin_name: {**origin, "val_loss_randomised_sky": start["loss"]},
                    f"{name}_epochs": int(epochs_), f"{name}_learning_rate": float(rate),
                    f"{name}_sky": sky}
            return model, meta, history

        return fit_stage, sky

    stage_key, stage_fit = base_key, base_fit
    if randomise_epochs:
        if randomise_params is None or randomise_shift is None:
            raise ValueError("randomise_epochs needs randomise_params and randomise_shift")
        stage_fit, sky = randomised_stage(base_key, base_fit, randomise_epochs, randomise_params, randomise_shift,
                                          "randomise", "randomised_from")
        stage_key = {**base_key, "randomise_epochs": int(randomise_epochs),
                     "randomise_learning_rate": float(randomise_learning_rate), "randomise_sky": sky}
    if widen_epochs:
        if not randomise_epochs or widen_params is None or widen_shift is None:
            raise ValueError("widen_epochs needs a randomised stage, widen_params and widen_shift")
        stage_fit, sky = randomised_stage(stage_key, stage_fit, widen_epochs, widen_params, widen_shift, "widen",
                                          "widened_from")
        stage_key = {**stage_key, "widen_epochs": int(widen_epochs), "widen_sky": sky}
    if widen_continue_epochs:
        if not widen_epochs:
            raise ValueError("widen_continue_epochs needs a wider stage (widen_epochs)")
        stage_fit, _ = randomised_stage(stage_key, stage_fit, widen_continue_epochs, widen_params, widen_shift,
                                        "widen_continue", "widen_continued_from", rate=widen_continue_learning_rate)
        stage_key = {**stage_key, "widen_continue_epochs": int(widen_continue_epochs),
                     "widen_continue_learning_rate": float(widen_continue_learning_rate)}
    model, meta, history, seconds = train_cached("cta_localiser", stage_key, stage_fit, profile, LOCALISER_FILE)
    if (readout, int(window)) != ("softmax", 0):
        model = models.with_readout(model, int(window), readout)
    return model, meta, history, seconds


def apply_cleaners(maps: dict, cleaner, talk_cleaner, normaliser, fov_threshold: float,
                   smooth_sigma_px: float, talk_smooth_sigma_px: float):
    """Every cleaning method of notebook 02 on one set of maps: the CNN-Cleaner's
    and the talk-preprocessed cleaner's maps in counts, and the background
    normalisations of the learned and the classical field-of-view fits."""
    from . import baselines

    templates = background_for(maps)
    cleaned = clean_counts(cleaner, maps["counts"], smooth_sigma_px)
    cleaned_talk = clean_counts(talk_cleaner, maps["counts"], talk_smooth_sigma_px)
    norms = {"bgnet": background_norms(normaliser, maps["counts"], templates),
             "fov": baselines.fov_background_norm(maps["counts"], templates, threshold=fov_threshold)}
    return cleaned, cleaned_talk, norms
