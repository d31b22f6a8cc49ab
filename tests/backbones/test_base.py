import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images

from rcml_graph.backbones.base import pil_transform, preprocess_batch

HALF = (0.5, 0.5, 0.5)


def test_preprocess_batch_constant_colour_known_values():
    # A pure red 40 x 60 image stays pure red under resize; (1 - 0.5) / 0.5 = 1, (0 - 0.5) / 0.5 = -1.
    images = torch.zeros(2, 3, 40, 60, dtype=torch.uint8)
    images[:, 0] = 255
    out = preprocess_batch(images, 16, HALF, HALF)
    assert out.shape == (2, 3, 16, 16)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out[:, 0], torch.ones(2, 16, 16), atol=1e-5, rtol=0)
    torch.testing.assert_close(out[:, 1:], -torch.ones(2, 2, 16, 16), atol=1e-5, rtol=0)


def test_preprocess_batch_centre_crops_the_long_side():
    # 8 x 16 image, left quarter black, the rest white: at size 8 no resize happens and the
    # centre crop keeps columns 4..11, which are all white.
    images = torch.full((1, 3, 8, 16), 255, dtype=torch.uint8)
    images[..., :4] = 0
    out = preprocess_batch(images, 8, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out.shape == (1, 3, 8, 8)
    assert torch.all(out == 1.0)


def test_preprocess_batch_accepts_unbatched_float():
    image = torch.full((3, 10, 10), 0.25)
    out = preprocess_batch(image, 10, HALF, HALF)
    assert out.shape == (3, 10, 10)
    torch.testing.assert_close(out, torch.full((3, 10, 10), -0.5))


def test_preprocess_batch_matches_pil_path_on_real_photos():
    photos = load_sample_images().images  # two 427 x 640 RGB photos
    batch = torch.from_numpy(np.stack(photos)).permute(0, 3, 1, 2)
    tensor_path = preprocess_batch(batch, 32, HALF, HALF)
    pil_path = torch.stack([pil_transform(32, HALF, HALF)(Image.fromarray(p)) for p in photos])
    assert tensor_path.shape == pil_path.shape == (2, 3, 32, 32)
    # Same geometry; only the bicubic kernels differ slightly (PIL vs torch antialias).
    assert (tensor_path - pil_path).abs().mean() < 0.01
    assert (tensor_path - pil_path).abs().max() < 0.1


@pytest.mark.parametrize(
    "images",
    [torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(8, 8), torch.zeros(1, 3, 8, 8, dtype=torch.int32)],
)
def test_preprocess_batch_rejects_bad_input(images):
    with pytest.raises(ValueError, match="images must"):
        preprocess_batch(images, 8, HALF, HALF)
