"""WaveNet: causality and receptive field, mu-law, cached == naive generation, the audio data
source (WAV round trip, errors, resampling, tfds mock data), log-mel features, exact resume."""

import dataclasses
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import load_config
from scipy.io import wavfile

from aigc_jax import train
from aigc_jax.data import audio as audio_data
from aigc_jax.data.base import epoch_indices
from aigc_jax.data.mel import (
    MelConfig,
    hz_to_mel,
    log_mel,
    mel_filterbank,
    mel_to_hz,
    stft_magnitude,
)
from aigc_jax.distributions import discretized_logistic_mixture_log_prob
from aigc_jax.errors import UserError
from aigc_jax.evaluation import audio as audio_eval
from aigc_jax.methods.wavenet.quantize import mu_law_decode, mu_law_encode, mu_law_error_bound
from aigc_jax.methods.wavenet.sampling import SampleConfig, generate, generate_naive
from aigc_jax.models.wavenet import WaveNet, WaveNetConfig, dilation_stack, position_features

RATE = 8000


def tone(freq: float, seconds: float, rate: int = RATE, amp: float = 0.5) -> np.ndarray:
    """A sine tone, float32 in [-1, 1]."""
    t = np.arange(int(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write_tone_folder(root, rate: int = RATE, per_class: int = 4) -> dict[str, np.ndarray]:
    """Two classes of int16 tone WAVs (low/high); returns {path: int16 samples}."""
    written = {}
    for c, base in (("high", 1200.0), ("low", 300.0)):
        os.makedirs(root / c, exist_ok=True)
        for i in range(per_class):
            x = audio_data.to_int16(tone(base * (1 + 0.1 * i), 0.05 + 0.01 * i, rate))
            path = str(root / c / f"spk{i}_{c}.wav")
            wavfile.write(path, rate, x)
            written[path] = x
    return written


def tiny_config(path, **data):
    c = load_config("wavenet", "tiny")
    c.data.path = str(path)
    c.train.tensorboard = False
    for k, v in data.items():
        c.data[k] = v
    return c


# ---------------------------------------------------------------------------------------------
# The network.

STACKS = {"tiny": (dilation_stack(16, 1), 2), "spoken_digits": (dilation_stack(256, 2), 3),
          "paper_1..512x3": (dilation_stack(512, 3), 2), "uneven": ((1, 3, 9, 2), 2)}


@pytest.mark.parametrize("stack", list(STACKS))
def test_causal_and_receptive_field_equals_formula(stack):
    # d output[t0] / d input: exactly zero after t0 (causal) and before t0 - R + 1 (the field);
    # gradients, not perturbations, since a 30-layer path's effect is below float32 rounding.
    dilations, kernel_size = STACKS[stack]
    cfg = WaveNetConfig(dilations=dilations, kernel_size=kernel_size, residual_channels=4,
                        gate_channels=4, skip_channels=8, output="logistic_mixture",
                        num_mixtures=2)
    r = cfg.receptive_field
    assert r == (kernel_size - 1) * sum(dilations) + 1
    length, t0 = r + 40, r + 10
    x = jax.random.uniform(jax.random.PRNGKey(0), (1, length), minval=-1.0, maxval=1.0)
    model = WaveNet(cfg)
    params = model.init(jax.random.PRNGKey(1), x)
    grad = jax.jit(jax.grad(lambda x: model.apply(params, x)[0, t0].sum()))(x)
    seen = np.asarray(grad)[0] != 0  # [T]
    assert not seen[t0 + 1:].any()  # causal: no future sample
    assert not seen[:t0 - r + 1].any()  # nothing beyond the receptive field
    # Inside it, exactly the lags sum_i j_i d_i (0 <= j_i < kernel_size) that some path reaches.
    lags = {0}
    for d in cfg.dilations:
        lags = {lag + j * d for lag in lags for j in range(kernel_size)}
    assert max(lags) == r - 1
    np.testing.assert_array_equal(sorted(t0 - np.flatnonzero(seen)), sorted(lags))


def test_changing_a_future_sample_never_changes_an_output():
    cfg = WaveNetConfig(dilations=dilation_stack(32, 1), residual_channels=4, gate_channels=4,
                        skip_channels=8, num_labels=2)
    x = jax.random.randint(jax.random.PRNGKey(0), (2, 100), 0, 256)
    model = WaveNet(cfg)
    params = model.init(jax.random.PRNGKey(1), x, jnp.array([0, 1]))
    apply = jax.jit(model.apply)
    base = np.asarray(apply(params, x, jnp.array([0, 1])))
    for s in (0, 37, 99):
        out = np.asarray(apply(params, x.at[:, s].set((x[:, s] + 101) % 256), jnp.array([0, 1])))
        np.testing.assert_array_equal(out[:, :s], base[:, :s])
        assert (out[:, s] != base[:, s]).any()


def test_dilation_stack_repeats_powers_of_two():
    assert dilation_stack(8, 2) == (1, 2, 4, 8, 1, 2, 4, 8)
    assert WaveNetConfig(dilations=dilation_stack(512, 3)).receptive_field == 3070


def test_mu_law_round_trip_error_bound():
    x = np.linspace(-1.0, 1.0, 200_001)
    q = mu_law_encode(x)
    assert q.min() == 0 and q.max() == 255
    err = np.abs(mu_law_decode(q) - x)
    bound = mu_law_error_bound(x)
    assert (err <= bound + 1e-7).all()
    assert err.max() > 0.5 * bound.max()  # the bound is tight, not vacuous
    assert err[np.abs(x) < 0.01].max() < 3e-4  # fine steps near silence
    np.testing.assert_array_equal(mu_law_encode(mu_law_decode(np.arange(256))), np.arange(256))
    in_jax = np.asarray(mu_law_encode(jnp.asarray(x)))  # float32: may round a boundary apart
    assert np.abs(in_jax - q).max() <= 1 and (in_jax != q).mean() < 1e-4


def test_discretized_logistic_mixture_sums_to_one_on_the_grid():
    bins = 256
    grid = jnp.linspace(-1.0, 1.0, bins)
    params = jax.random.normal(jax.random.PRNGKey(0), (3, 1, 15)) * jnp.array([1.0] * 5 +
                                                                              [0.5] * 5 + [1.0] * 5)
    logp = discretized_logistic_mixture_log_prob(grid[None, :], params, bins)  # [3, bins]
    np.testing.assert_allclose(np.exp(logp).sum(-1), 1.0, atol=2e-3)


@pytest.mark.parametrize("output", ["mulaw", "logistic_mixture"])
def test_cached_generation_equals_naive(output):
    cfg = WaveNetConfig(dilations=(1, 2, 4, 1), kernel_size=2, residual_channels=8,
                        gate_channels=8, skip_channels=16, output=output, num_mixtures=3,
                        num_labels=3, label_dim=4, mel_bins=6, hop=8, cond_channels=8,
                        position_dim=4)
    model = WaveNet(cfg)
    sc = SampleConfig(length=32, logistic_bits=8, sample_rate=16, lead=5)
    label = jnp.array([0, 2])
    mel = jax.random.normal(jax.random.PRNGKey(3), (2, 1 + sc.length // cfg.hop, 6))
    x = jnp.zeros((2, sc.length), jnp.int32 if output == "mulaw" else jnp.float32)
    params = model.init(jax.random.PRNGKey(1), x, label, mel, jnp.zeros((2, sc.length)))
    rng = jax.random.PRNGKey(7)
    cached = np.asarray(generate(model, params, rng, label, mel, sc))
    naive = np.asarray(generate_naive(model, params, rng, label, mel, sc))
    assert cached.shape == (2, sc.length)
    np.testing.assert_array_equal(cached, naive)
    assert len(np.unique(cached)) > 5  # really sampled, not a constant
    other = np.asarray(generate(model, params, rng, jnp.array([1, 1]), mel, sc))
    assert not np.array_equal(other, cached)  # the label conditions the samples
    later = np.asarray(generate(model, params, rng, label, mel,
                                dataclasses.replace(sc, lead=0)))
    assert not np.array_equal(later, cached)  # so does the position


def test_position_features_and_window_offsets(tmp_path):
    """Input i of a training window sits offset + i - pad samples after its clip's onset."""
    t = jnp.array([[0.0, 0.25, -0.1]])
    f = np.asarray(position_features(t, 4))  # frequencies 0.5 and 64 Hz
    np.testing.assert_allclose(f[0, :, 0], np.sin(2 * np.pi * 0.5 * np.array([0, 0.25, -0.1])),
                               atol=1e-6)
    np.testing.assert_allclose(f[0, :, 3], np.cos(2 * np.pi * 64 * np.array([0, 0.25, -0.1])),
                               atol=1e-4)
    write_tone_folder(tmp_path / "wavs")
    audio_data.load_wav_folder.cache_clear()
    c = tiny_config(tmp_path / "wavs")
    ds = audio_data.create_audio_dataset(c, "train")
    b = ds.train_batch(3, 4)
    for a, i, off in zip(b["audio"], epoch_indices(ds.num_examples, ds.seed, 3, 4), b["offset"],
                         strict=True):
        padded = np.pad(ds.clip(i), (ds.pad, ds.pad))
        np.testing.assert_allclose(a, padded[off:off + ds.window], atol=1 / 32768)
    assert ds.info()["pad"] == ds.pad


# ---------------------------------------------------------------------------------------------
# Data.


def test_wav_round_trip_through_the_data_source(tmp_path):
    written = write_tone_folder(tmp_path)
    audio_data.load_wav_folder.cache_clear()
    cfg = tiny_config(tmp_path, test_pattern="^spk0_", window=200, pad=64, eval_window=1024)
    train_ds = audio_data.create_audio_dataset(cfg, "train")
    test_ds = audio_data.create_audio_dataset(cfg, "test")
    assert train_ds.num_examples == 6 and test_ds.num_examples == 2
    assert train_ds.num_classes == 2 and sorted(set(test_ds.labels)) == [0, 1]
    batch = next(test_ds.eval_batches(2))
    for i, name in enumerate(test_ds.names):
        original = written[name].astype(np.float32) / 32768.0
        got = batch["audio"][i][batch["weight"][i] > 0]
        np.testing.assert_array_equal(got, original)  # bit exact at the native rate
        np.testing.assert_array_equal(batch["audio"][i][:64], 0.0)  # leading silence
        assert test_ds.labels[i] == (0 if "high" in name else 1)
    b = train_ds.train_batch(3, 4)
    assert b["audio"].shape == (4, 200) and b["audio"].dtype == np.float32
    assert b["label"].dtype == np.int32


def test_windows_are_a_function_of_seed_and_step(tmp_path):
    write_tone_folder(tmp_path)
    audio_data.load_wav_folder.cache_clear()
    cfg = tiny_config(tmp_path, window=200, pad=64)
    a = audio_data.create_audio_dataset(cfg, "train")
    b = audio_data.create_audio_dataset(cfg, "train")
    for step in (0, 5, 17):
        np.testing.assert_array_equal(a.train_batch(step, 4)["audio"],
                                      b.train_batch(step, 4)["audio"])
    assert not np.array_equal(a.train_batch(0, 4)["audio"], a.train_batch(1, 4)["audio"])
    halves = [a.train_batch(5, 4, p, 2)["audio"] for p in (0, 1)]
    np.testing.assert_array_equal(np.concatenate(halves), a.train_batch(5, 4)["audio"])


def test_resampling_keeps_the_pitch(tmp_path):
    os.makedirs(tmp_path / "a")
    wavfile.write(str(tmp_path / "a" / "x.wav"), 16000, audio_data.to_int16(tone(440.0, 0.5,
                                                                                 16000)))
    clip = audio_data.read_wav(str(tmp_path / "a" / "x.wav"), RATE, False)
    assert len(clip) == 4000
    spectrum = np.abs(np.fft.rfft(clip.astype(np.float32)))
    assert abs(np.argmax(spectrum) * RATE / len(clip) - 440.0) < 3.0


def test_audio_errors_are_one_line(tmp_path):
    os.makedirs(tmp_path / "a")
    stereo = np.stack([tone(300, 0.1), tone(500, 0.1)], axis=1)
    wavfile.write(str(tmp_path / "a" / "stereo.wav"), RATE, audio_data.to_int16(stereo))
    with pytest.raises(UserError, match="2 channels; expected mono"):
        audio_data.read_wav(str(tmp_path / "a" / "stereo.wav"), RATE, False)
    assert audio_data.read_wav(str(tmp_path / "a" / "stereo.wav"), RATE, True).ndim == 1
    (tmp_path / "a" / "broken.wav").write_bytes(b"RIFF\x00\x00 not a wav")
    with pytest.raises(UserError, match="cannot read WAV file .*broken.wav"):
        audio_data.read_wav(str(tmp_path / "a" / "broken.wav"), RATE, False)
    short = tmp_path / "short"
    write_tone_folder(short)
    audio_data.load_wav_folder.cache_clear()
    with pytest.raises(UserError, match="fewer than data.window=5000"):
        audio_data.create_audio_dataset(tiny_config(short, window=5000), "train")
    with pytest.raises(UserError, match="not a folder"):
        audio_data.create_audio_dataset(tiny_config(tmp_path / "missing"), "train")
    with pytest.raises(UserError, match="test_pattern"):
        audio_data.create_audio_dataset(tiny_config(short, test_pattern="nomatch"), "train")


def test_tfds_speech_commands_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    pytest.importorskip("tensorflow")  # tfds builds the speech_commands builder with TF
    audio_data.load_tfds_audio.cache_clear()
    c = load_config("wavenet", "speech_commands")
    c.data.window, c.data.pad = 64, 32
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        ds = audio_data.create_audio_dataset(c, "train")
    assert ds.num_examples == 6 and ds.sample_rate == 16000
    batch = ds.train_batch(0, 4)
    assert batch["audio"].shape == (4, 64) and np.abs(batch["audio"]).max() <= 1.0
    assert batch["label"].min() >= 0 and batch["label"].max() < 12
    audio_data.load_tfds_audio.cache_clear()


def test_tfds_nsynth_reads_nested_labels_and_resamples(monkeypatch):
    tfds = pytest.importorskip("tensorflow_datasets")
    examples = [{"audio": tone(220.0 * (i + 1), 0.5, 16000), "instrument": {"family": i % 3}}
                for i in range(5)]
    monkeypatch.setattr(tfds, "data_source", lambda name, split, data_dir: examples)
    audio_data.load_tfds_audio.cache_clear()
    c = load_config("wavenet", "tiny")
    c.data.name = "nsynth"
    ds = audio_data.create_audio_dataset(c, "train")
    assert ds.num_examples == 5 and ds.num_classes == 3 and ds.sample_rate == RATE
    np.testing.assert_array_equal(ds.labels, [0, 1, 2, 0, 1])
    np.testing.assert_allclose(ds.clip(0)[20:-20], tone(220.0, 0.5)[20:-20], atol=2e-3)
    audio_data.load_tfds_audio.cache_clear()


def test_log_mel_matches_scipy_stft_and_finds_the_tone():
    from scipy.signal import stft

    x = tone(1000.0, 0.25) + 0.05 * np.random.default_rng(0).standard_normal(2000)
    x = x.astype(np.float32)
    ours = np.asarray(stft_magnitude(jnp.asarray(x), 256, 64))  # [F, 129]
    padded = np.pad(x, 128, mode="reflect")
    _, _, z = stft(padded, nperseg=256, noverlap=192, window="hann", boundary=None,
                   padded=False, detrend=False, return_onesided=True, scaling="spectrum")
    theirs = np.abs(z).T * 256 * 0.5  # scipy scales by 1 / sum(window) = 2 / n
    np.testing.assert_allclose(ours, theirs[:len(ours)], rtol=1e-3, atol=1e-3)
    cfg = MelConfig(sample_rate=RATE, n_fft=256, hop=64, n_mels=40)
    bank = mel_filterbank(cfg)
    assert bank.shape == (129, 40)
    centres = mel_to_hz(np.linspace(hz_to_mel(0), hz_to_mel(4000), 42))[1:-1]
    mel = np.asarray(log_mel(jnp.asarray(x), cfg))  # [F, 40]
    assert mel.shape == (1 + 2000 // 64, 40)
    assert abs(centres[mel[5:-5].mean(0).argmax()] - 1000.0) < 80.0


def test_linear_predictor_beats_unigram_on_tones():
    rng = np.random.default_rng(0)
    clips = [np.roll(tone(300.0, 0.1), k) + 0.01 * rng.standard_normal(800).astype(np.float32)
             for k in (0, 5, 11, 3)]
    weights = [np.ones(len(c)) for c in clips]
    unigram = audio_eval.unigram_bits(clips[:3], [clips[3]], [weights[3]])
    linear = audio_eval.linear_predictor_bits(clips[:3], [clips[3]], [weights[3]], order=8)
    adaptive = audio_eval.linear_predictor_bits(clips[:3], [clips[3]], [weights[3]], order=8,
                                                adaptive=16)
    assert 0 < linear < unigram - 2.0 and unigram <= 8.0
    assert 0 < adaptive < unigram - 2.0


# ---------------------------------------------------------------------------------------------
# Training.


def test_train_resume_exact_and_eval(tmp_path):
    write_tone_folder(tmp_path / "wavs")
    audio_data.load_wav_folder.cache_clear()
    c = tiny_config(tmp_path / "wavs")
    c.wavenet.conditioning = "mel"  # local conditioning on the window's own log-mel
    c.wavenet.position_dim, c.wavenet.sample_lead = 4, 8  # and on the time since the onset
    full = train.train_and_evaluate(c, str(tmp_path / "full"))
    c.train.stop_after = 10
    train.train_and_evaluate(c, str(tmp_path / "resumed"))
    c.train.stop_after = 0
    resumed = train.train_and_evaluate(c, str(tmp_path / "resumed"))
    assert int(resumed.step) == c.train.num_steps
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(full.params),
                 jax.device_get(resumed.params))
    results = train.evaluate(c, str(tmp_path / "full"))
    assert 0.0 < results["bits_per_sample"] < 8.5
    files = train.sample(c, str(tmp_path / "full"), 2)
    rate, wav = wavfile.read([f for f in files if f.endswith("_0.wav")][0])
    assert rate == RATE and wav.dtype == np.int16 and wav.shape == (c.wavenet.sample_length,)
    assert any(f.endswith(".png") for f in files)


def test_unconditional_generation_takes_num():
    cfg = WaveNetConfig(dilations=(1, 2), residual_channels=4, gate_channels=4, skip_channels=4)
    model = WaveNet(cfg)
    params = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))
    out = generate(model, params, jax.random.PRNGKey(1), None, None, SampleConfig(length=8),
                   num=3)
    assert out.shape == (3, 8)


def test_validate_names_the_key():
    from aigc_jax.methods.wavenet import validate

    c = load_config("wavenet", "tiny")
    c.wavenet.output = "gaussian"
    with pytest.raises(UserError, match="wavenet.output='gaussian'"):
        validate(c)
    c = load_config("wavenet", "tiny")
    c.wavenet.conditioning = "speaker"
    with pytest.raises(UserError, match="wavenet.conditioning"):
        validate(c)
    c = load_config("wavenet", "tiny")
    c.wavenet.position_dim = 3
    with pytest.raises(UserError, match="wavenet.position_dim=3"):
        validate(c)


def test_sampler_keys_are_safe_to_change_after_training():
    from aigc_jax.run_config import is_safe

    assert is_safe("wavenet.temperature") and is_safe("wavenet.sample_lead")
    assert not is_safe("wavenet.position_dim") and not is_safe("wavenet.conditioning")
