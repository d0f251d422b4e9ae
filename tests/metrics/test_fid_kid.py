"""FID / KID: agreement with pytorch-fid on the same (random, FID-layout) weights, feature caching,
weight lookup and its errors, KID against a direct computation, and the `imgsteal fid` command.

No real Inception weights are needed: a random state dict in the FID layout is written to a temp
file and given to both implementations. Images are generated here (small, 32-48 px).
"""

from __future__ import annotations

import urllib.error
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from imgsteal.data.images import list_images, load_image, save_image
from imgsteal.errors import WeightsUnavailableError
from imgsteal.metrics import features as feat
from imgsteal.metrics.fid import SmallSampleWarning, fid, fid_from_features, frechet_distance
from imgsteal.metrics.inception import FIDInceptionV3, random_fid_inception_state_dict
from imgsteal.metrics.kid import kid, kid_from_features


@pytest.fixture(autouse=True)
def _pytorch_fid_on_new_scipy(monkeypatch):
    """pytorch-fid 0.3.0 calls scipy.linalg.sqrtm(..., disp=False), which newer SciPy rejects
    (seen with a GPU machine's SciPy): give it the old two-value call so the reference still runs."""
    import inspect
    import types

    from scipy import linalg

    if "disp" in inspect.signature(linalg.sqrtm).parameters:
        return
    fid_score = pytest.importorskip("pytorch_fid.fid_score")

    def sqrtm(a, disp=True, **kwargs):
        root = linalg.sqrtm(a, **kwargs)
        if disp:
            return root
        error = np.linalg.norm(root @ root - a, "fro") / np.linalg.norm(a, "fro")  # the old error estimate
        return root, error

    old_style = types.SimpleNamespace(**{name: getattr(linalg, name) for name in dir(linalg) if not name.startswith("_")})
    old_style.sqrtm = sqrtm
    monkeypatch.setattr(fid_score, "linalg", old_style)


def _smooth_image(rng: np.random.Generator, size: int) -> torch.Tensor:
    """A gradient with a coloured disc: photo-like, low frequency."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 1, 3)[:, None, None] + rng.uniform(-0.5, 0.5, 3)[:, None, None] * (xx + yy)
    cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.3)
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
    img = np.where(disc, rng.uniform(0, 1, 3)[:, None, None], base)
    return torch.from_numpy(np.clip(img, 0, 1)).float()


def _texture_image(rng: np.random.Generator, size: int) -> torch.Tensor:
    """Blocky colour noise: painting-like, high frequency."""
    cells = torch.from_numpy(rng.uniform(0, 1, (1, 3, 8, 8))).float()
    img = torch.nn.functional.interpolate(cells, size=(size, size), mode="nearest")[0]
    return (img + torch.from_numpy(rng.normal(0, 0.1, img.shape)).float()).clamp(0, 1)


def _write_folder(folder: Path, make, n: int, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        save_image(make(rng, size), folder / f"img_{i:02d}.png")
    return folder


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory) -> Path:
    """Random FID-layout weights, saved where torch hub (and so pytorch-fid) would look for them."""
    hub = tmp_path_factory.mktemp("torch_home") / "hub"
    path = hub / "checkpoints" / feat.FID_WEIGHTS_FILENAME
    path.parent.mkdir(parents=True)
    torch.save(random_fid_inception_state_dict(seed=0), path)
    return path


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("images")
    return (
        _write_folder(root / "smooth", _smooth_image, n=4, size=48, seed=1),
        _write_folder(root / "texture", _texture_image, n=4, size=48, seed=2),
    )


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("feature_cache")


@pytest.fixture(scope="session")
def our_features(weights_file, folders, shared_cache) -> tuple[np.ndarray, np.ndarray]:
    """Our features of both folders (computed once; also fills `shared_cache`)."""
    return tuple(feat.inception_features(f, weights=weights_file, cache_dir=shared_cache) for f in folders)


@pytest.fixture(scope="session")
def pytorch_fid_features(weights_file, folders) -> tuple[np.ndarray, np.ndarray]:
    """pytorch-fid's own pipeline (its InceptionV3 loading the same file from the torch hub cache)."""
    from pytorch_fid.fid_score import get_activations
    from pytorch_fid.inception import InceptionV3

    previous = torch.hub._hub_dir  # restored as it was (None: follow $TORCH_HOME), not pinned
    torch.hub.set_dir(str(weights_file.parent.parent))
    try:
        model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).eval()
    finally:
        torch.hub._hub_dir = previous
    return tuple(
        get_activations(list_images(f), model, batch_size=4, device="cpu", num_workers=0) for f in folders
    )


@pytest.fixture
def count_forwards(monkeypatch) -> list[int]:
    """Counts images that go through the Inception network."""
    seen: list[int] = []
    original = FIDInceptionV3.forward

    def spy(self, images):
        seen.append(images.shape[0])
        return original(self, images)

    monkeypatch.setattr(FIDInceptionV3, "forward", spy)
    return seen


# ----------------------------------------------------------------------------- agreement with pytorch-fid


@pytest.mark.slow  # over 10 s on the busy 2-core box (subprocesses / served model / reference features)
def test_features_equal_pytorch_fid(pytorch_fid_features, our_features):
    for ours, theirs in zip(our_features, pytorch_fid_features):
        assert ours.shape == theirs.shape == (4, 2048)
        # Random weights still give informative features: they differ between images.
        assert theirs.std(axis=0).mean() > 1e-3
        np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)


def test_random_weights_load_strictly_into_pytorch_fid(weights_file, monkeypatch):
    # pytorch-fid builds its own network and loads the file strictly: same names, same shapes.
    from pytorch_fid.inception import fid_inception_v3

    monkeypatch.setattr(torch.hub, "_hub_dir", str(weights_file.parent.parent))
    theirs = fid_inception_v3().state_dict()
    ours = torch.load(weights_file, weights_only=True)
    assert theirs.keys() == ours.keys()
    assert all(torch.equal(theirs[k], ours[k]) for k in ours)


@pytest.mark.parametrize("singular", [False, True])
def test_frechet_distance_matches_pytorch_fid_formula(singular):
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(0)
    dim, n = 32, (10 if singular else 200)
    a = rng.normal(size=(n, dim))
    b = rng.normal(size=(n, dim)) @ rng.normal(size=(dim, dim)) * 0.3 + 0.5
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's sqrtm complains about singular input
        reference = calculate_frechet_distance(mu1, s1, mu2, s2)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-6)
    assert frechet_distance(mu1, s1, mu2, s2, method="sqrtm") == pytest.approx(reference, rel=1e-6)
    # The low-rank route (fewer samples than dimensions) and the covariance route agree.
    assert fid_from_features(a, b) == pytest.approx(reference, rel=1e-6)


@pytest.mark.slow  # shares the pytorch-fid reference features (7-11 s to compute here) with the test above
def test_fid_equals_pytorch_fid(pytorch_fid_features, folders, weights_file, shared_cache, our_features):
    """Same weights, same folders: FID within 0.5% of pytorch-fid's (here within 1e-4)."""
    # pytorch-fid's formula (sqrtm) takes tens of seconds at D=2048 on 2 cores; it is checked
    # against ours at D=32 above and end to end in the slow test below.
    reference = fid_from_features(*pytorch_fid_features)
    with pytest.warns(SmallSampleWarning, match="KID"):
        ours = fid(*folders, weights=weights_file, cache_dir=shared_cache)
    assert ours > 0
    assert ours == pytest.approx(reference, rel=1e-4)


@pytest.mark.slow
def test_fid_equals_pytorch_fid_calculate_fid_given_paths(folders, weights_file, shared_cache, monkeypatch):
    """pytorch-fid's complete command path (its sqrtm included): slow on CPU, hence marked."""
    from pytorch_fid.fid_score import calculate_fid_given_paths

    monkeypatch.setattr(torch.hub, "_hub_dir", str(weights_file.parent.parent))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = calculate_fid_given_paths([str(f) for f in folders], 4, "cpu", 2048, num_workers=0)
        ours = fid(*folders, weights=weights_file, cache_dir=shared_cache)
    assert ours == pytest.approx(reference, rel=5e-3)


# ----------------------------------------------------------------------------- FID behaviour


def test_fid_of_a_set_with_itself_is_zero_and_tensors_equal_folders(weights_file, folders, our_features, shared_cache):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SmallSampleWarning)
        assert fid(folders[0], folders[0], weights=weights_file, cache_dir=shared_cache) == pytest.approx(0, abs=1e-6)
        tensors = torch.stack([load_image(p) for p in list_images(folders[0])[:2]])
        from_tensors = feat.inception_features(tensors, weights=weights_file)
    np.testing.assert_allclose(from_tensors, our_features[0][:2], atol=1e-5)


def test_mixed_size_images_are_resized_one_by_one():
    from imgsteal.metrics.inception import resize_for_inception

    rng = np.random.default_rng(3)
    small, large = _smooth_image(rng, 32), _smooth_image(rng, 40)
    batch = feat._to_inception_batch([small, large], torch.device("cpu"))
    assert batch.shape == (2, 3, 299, 299)
    for image, resized in zip((small, large), batch):
        # What the network sees equals what it would see given that image alone.
        np.testing.assert_allclose(resize_for_inception(resized[None]), resize_for_inception(image[None]), atol=1e-6)


def test_resize_matches_the_reference_preprocessing():
    # pytorch-fid / TF FID: bilinear to 299 without antialias, then 2x - 1; a 299 input is left as is.
    from imgsteal.metrics.inception import resize_for_inception

    x = torch.rand(2, 3, 64, 80)
    expected = torch.nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False) * 2 - 1
    torch.testing.assert_close(resize_for_inception(x), expected, rtol=0, atol=0)
    y = torch.rand(1, 3, 299, 299)
    torch.testing.assert_close(resize_for_inception(y), y * 2 - 1, rtol=0, atol=0)


def test_fid_needs_two_images_per_set():
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(np.zeros((1, 8)), np.zeros((5, 8)))


# ----------------------------------------------------------------------------- cache


def test_folder_features_are_cached_by_content(weights_file, tmp_path, count_forwards):
    folder = _write_folder(tmp_path / "imgs", _smooth_image, n=2, size=32, seed=5)
    cache_dir = tmp_path / "cache"

    first = feat.inception_features(folder, weights=weights_file, cache_dir=cache_dir)
    assert sum(count_forwards) == 2
    again = feat.inception_features(folder, weights=weights_file, cache_dir=cache_dir)
    assert sum(count_forwards) == 2, "a repeated evaluation must come from the cache"
    np.testing.assert_array_equal(first, again)
    assert len(list((cache_dir / "features").glob("*.npy"))) == 1

    # Moving the folder does not change the contents, so it is still a hit; changing a pixel is not.
    folder = folder.rename(tmp_path / "moved")
    feat.inception_features(folder, weights=weights_file, cache_dir=cache_dir)
    assert sum(count_forwards) == 2
    img = load_image(folder / "img_01.png")
    img[:, 0, 0] = 1 - img[:, 0, 0]
    save_image(img, folder / "img_01.png")
    feat.inception_features(folder, weights=weights_file, cache_dir=cache_dir)
    assert sum(count_forwards) == 4

    # cache=False always recomputes and writes nothing new.
    feat.inception_features(folder, weights=weights_file, cache_dir=cache_dir, cache=False)
    assert sum(count_forwards) == 6
    assert len(list((cache_dir / "features").glob("*.npy"))) == 2


def test_cache_key_depends_on_weights_and_files():
    base = feat.folder_cache_key(["a", "b"], "w1")
    assert base == feat.folder_cache_key(["a", "b"], "w1")
    assert base != feat.folder_cache_key(["a", "b"], "w2")
    assert base != feat.folder_cache_key(["a", "c"], "w1")
    assert base != feat.folder_cache_key(["a"], "w1")


def test_env_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("IMGSTEAL_CACHE", str(tmp_path / "root"))
    assert feat.FeatureCache().dir == tmp_path / "root" / "features"


def test_corrupt_cache_entry_is_recomputed(tmp_path):
    cache = feat.FeatureCache(tmp_path)
    cache.put("k", np.ones((2, 2048), np.float32))
    assert cache.get("k").shape == (2, 2048)
    (cache.dir / "k.npy").write_bytes(b"garbage")
    assert cache.get("k") is None


# ----------------------------------------------------------------------------- weights lookup


@pytest.fixture
def no_weights_anywhere(monkeypatch, tmp_path):
    """Empty hub cache, no env var, and a download that fails as it does offline."""
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "empty_hub"))
    monkeypatch.delenv(feat.WEIGHTS_ENV, raising=False)
    calls = []

    def offline(url, dst, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return calls


def test_missing_weights_raise_a_clear_error_never_random_numbers(no_weights_anywhere, folders, count_forwards):
    with pytest.raises(WeightsUnavailableError) as info:
        fid(*folders, cache=False)
    message = str(info.value)
    assert "--inception-weights" in message and "IMGSTEAL_INCEPTION_WEIGHTS" in message
    assert str(feat.hub_weights_path()) in message and "empty_hub" in message
    assert no_weights_anywhere == [feat.FID_WEIGHTS_URL]  # it did try the standard download
    assert count_forwards == []


def test_weights_from_env_and_hub_cache(no_weights_anywhere, monkeypatch, weights_file, tmp_path):
    monkeypatch.setenv(feat.WEIGHTS_ENV, str(weights_file))
    assert feat.resolve_inception_weights() == weights_file
    monkeypatch.setenv(feat.WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(WeightsUnavailableError, match="nope.pth"):
        feat.resolve_inception_weights()
    monkeypatch.delenv(feat.WEIGHTS_ENV)
    monkeypatch.setattr(torch.hub, "_hub_dir", str(weights_file.parent.parent))
    assert feat.resolve_inception_weights() == weights_file
    assert no_weights_anywhere == []


def test_wrong_weights_file_is_rejected(tmp_path):
    wrong = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, wrong)
    with pytest.raises(WeightsUnavailableError, match="not an FID Inception-v3 state dict"):
        feat.load_inception(wrong, "cpu")
    pickled = tmp_path / "pickled.pth"
    torch.save({"model": object()}, pickled)  # needs unpickling of arbitrary objects: refused
    with pytest.raises(WeightsUnavailableError, match="holds Python objects besides tensors") as refused:
        feat.load_inception(pickled, "cpu")
    assert "weights_only" not in str(refused.value)  # imgsteal's message, never torch's advice


# ----------------------------------------------------------------------------- KID


def _direct_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² with k(a, b) = (a·b/d + 1)³, written out pair by pair."""
    d, m = x.shape[1], len(x)

    def k(a, b):
        return (float(np.dot(a, b)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_direct_computation():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 16)), rng.normal(0.3, 1.2, size=(12, 16))
    result = kid_from_features(x, y, subset_size=12, n_subsets=3)  # every subset is the whole set
    assert result.mean == pytest.approx(_direct_mmd2(x, y), rel=1e-10)
    assert result.std == pytest.approx(0, abs=1e-9)

    sub = kid_from_features(x, y, subset_size=5, n_subsets=4, seed=7)
    draws = np.random.default_rng(7)
    expected = []
    for _ in range(4):
        i, j = draws.choice(12, 5, replace=False), draws.choice(12, 5, replace=False)
        expected.append(_direct_mmd2(x[i], y[j]))
    assert sub.mean == pytest.approx(np.mean(expected), rel=1e-10)
    assert sub.std == pytest.approx(np.std(expected), rel=1e-8)
    assert (sub.subset_size, sub.n_subsets) == (5, 4)


def test_kid_large_sets_take_the_per_subset_route(monkeypatch):
    import importlib

    kid_module = importlib.import_module("imgsteal.metrics.kid")  # the package exports the function `kid`

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 8)), rng.normal(0.5, 1, size=(30, 8))
    precomputed = kid_from_features(x, y, subset_size=10, n_subsets=20)
    monkeypatch.setattr(kid_module, "_MAX_PRECOMPUTED_GRAM_ENTRIES", 0)
    per_subset = kid_from_features(x, y, subset_size=10, n_subsets=20)
    assert per_subset.mean == pytest.approx(precomputed.mean, rel=1e-10)
    assert per_subset.std == pytest.approx(precomputed.std, rel=1e-8)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(300, 32)), rng.normal(size=(300, 32))
    far = rng.normal(0.8, 1, size=(300, 32))
    same = kid_from_features(a, b, subset_size=100, n_subsets=50)
    different = kid_from_features(a, far, subset_size=100, n_subsets=50)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert different.mean > 10 * max(abs(same.mean), same.std)


def test_kid_defaults_and_validation():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(7, 4)), rng.normal(size=(9, 4))
    assert kid_from_features(x, y, n_subsets=2).subset_size == 7  # min(1000, smaller set)
    with pytest.raises(ValueError, match="subset_size"):
        kid_from_features(x, y, subset_size=8)
    with pytest.raises(ValueError, match="same D"):
        kid_from_features(x, rng.normal(size=(9, 5)))


def test_kid_on_folders_uses_the_cached_features(weights_file, folders, our_features, shared_cache, count_forwards):
    result = kid(*folders, weights=weights_file, cache_dir=shared_cache, subset_size=3, n_subsets=10)
    assert count_forwards == []
    assert result == kid_from_features(*our_features, subset_size=3, n_subsets=10)
    assert result.mean > 0


# ----------------------------------------------------------------------------- CLI


def test_cli_prints_fid_and_kid(weights_file, folders, our_features, shared_cache):
    from typer.testing import CliRunner

    from imgsteal.cli import app

    args = ["fid", str(folders[0]), str(folders[1]), "--inception-weights", str(weights_file), "--cache-dir",
            str(shared_cache), "--kid", "--kid-subset-size", "3", "--kid-subsets", "10"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fid_line = next(line for line in result.output.splitlines() if line.startswith("FID:"))
    assert float(fid_line.split()[1]) == pytest.approx(fid_from_features(*our_features), abs=1e-4)
    assert "KID:" in result.output and "10 subsets of 3" in result.output
    assert "biased" in result.output  # the small-set warning (stderr is mixed into output)


def test_cli_without_weights_exits_2_with_the_message(no_weights_anywhere, folders):
    from typer.testing import CliRunner

    from imgsteal.cli import app

    result = CliRunner().invoke(app, ["fid", str(folders[0]), str(folders[1]), "--no-cache"])
    assert result.exit_code == 2
    assert "--inception-weights" in result.output and "IMGSTEAL_INCEPTION_WEIGHTS" in result.output
