import itertools

import masks_reference
import pytest
import torch

from wandapp.errors import WandappError
from wandapp.masks import SparsityPattern, apply_mask, count_mask, follows_nm, nm_mask, sparsity, unstructured_mask
from wandapp.methods.wanda import wanda_score


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.7])
def test_unstructured_prunes_exactly_per_row(ratio):
    score = torch.randn(16, 40)
    mask = unstructured_mask(score, ratio)
    assert (mask.sum(1) == int(40 * ratio)).all()
    if ratio:  # every pruned score is <= every kept score of its row
        pruned_max = score.masked_fill(~mask, -float("inf")).max(1).values
        kept_min = score.masked_fill(mask, float("inf")).min(1).values
        assert (pruned_max <= kept_min).all()


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4)])
def test_nm_mask_keeps_n_per_group(n, m):
    score = torch.randn(8, 32)
    mask = nm_mask(score, n, m)
    assert ((~mask).reshape(8, -1, m).sum(-1) == n).all()
    w = torch.randn(8, 32)
    apply_mask(w, mask)
    assert follows_nm(w, n, m)


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 4)])
def test_nm_mask_equals_a_stable_sort_with_ties(n, m):
    torch.manual_seed(1)
    score = torch.round(torch.randn(12, 48) * 2) / 2  # many equal scores: ties go to the lower column
    groups = score.reshape(12, -1, m)
    idx = torch.sort(groups, dim=2, stable=True).indices[:, :, : m - n]
    expected = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, idx, True).reshape(12, 48)
    assert torch.equal(nm_mask(score, n, m), expected)


def test_wanda_mask_equals_brute_force():
    torch.manual_seed(0)
    w, xnorm = torch.randn(6, 8), torch.rand(8)
    score = wanda_score(w, xnorm)
    # brute force: per row, try every subset of 4 pruned columns, keep the one with the least pruned score
    expected = torch.zeros(6, 8, dtype=torch.bool)
    for r in range(6):
        best = min(itertools.combinations(range(8), 4), key=lambda c: sum(score[r, j].item() for j in c))
        expected[r, list(best)] = True
    assert torch.equal(SparsityPattern.parse("0.5").mask(score), expected)
    # 2:4: per group of 4, brute force over the 6 ways to prune 2
    expected = torch.zeros(6, 8, dtype=torch.bool)
    for r, g in itertools.product(range(6), range(2)):
        best = min(itertools.combinations(range(4), 2), key=lambda c: sum(score[r, 4 * g + j].item() for j in c))
        expected[r, [4 * g + j for j in best]] = True
    assert torch.equal(SparsityPattern.parse("2:4").mask(score), expected)


def test_mask_writes_positive_zero():
    w = -torch.rand(4, 8) - 0.1
    apply_mask(w, unstructured_mask(w.abs(), 0.5))
    zeros = w[w == 0]
    assert zeros.numel() == 16 and not torch.signbit(zeros).any()


@pytest.mark.parametrize("text,ratio", [("0.5", 0.5), ("0", 0.0), ("2:4", 0.5), ("4:8", 0.5), ("1:4", 0.75)])
def test_parse_valid(text, ratio):
    assert SparsityPattern.parse(text).ratio == ratio


@pytest.mark.parametrize("text,words", [("1.0", "outside [0, 1)"), ("-0.1", "outside"), ("4:4", "N < M"),
                                        ("5:4", "N < M"), ("abc", "invalid sparsity")])
def test_parse_invalid(text, words):
    with pytest.raises(WandappError, match=words.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        SparsityPattern.parse(text)


def test_nm_needs_divisible_columns():
    with pytest.raises(WandappError, match="divisible"):
        nm_mask(torch.randn(2, 6), 2, 4)


@pytest.mark.parametrize("text,label,path", [("2:4", "2:4", "2-4"), ("4:8", "4:8", "4-8"), ("0.5", "0.5", "0.5"),
                                             ("0.50", "0.5", "0.5"), (".7", "0.7", "0.7"), ("0", "0", "0"),
                                             ("0.1234567", "0.1234567", "0.1234567"), ("1e-5", "0.00001", "0.00001")])
def test_pattern_label_and_path_label_round_trip(text, label, path):
    from wandapp.workflow import LORA_SUFFIX, path_label, pattern_of

    p = SparsityPattern.parse(text)
    assert (p.label, p.path_label, path_label(text)) == (label, path, path)
    assert SparsityPattern.from_path_label(path) == p == pattern_of(path + LORA_SUFFIX)


@pytest.mark.parametrize("path", ["2:4", "2-4-8", "half", "1-1", "-0.5"])
def test_bad_sparsity_folder_is_an_error(path):
    with pytest.raises(WandappError):
        SparsityPattern.from_path_label(path)


def _stable_lowest(row: list[float], k: int) -> set[int]:
    """The k lowest entries of a row, ties to the lower column: Python's sorted() is stable."""
    return set(sorted(range(len(row)), key=lambda j: row[j])[:k])


@pytest.mark.parametrize("ratio", [0.25, 0.5])
def test_unstructured_ties_go_to_the_lower_column(ratio):
    # Three score levels over 1024 columns: an unstable sort (torch's default on CPU too) picks other tied columns.
    score = torch.randint(0, 3, (4, 1024), generator=torch.Generator().manual_seed(0)).float()
    mask = unstructured_mask(score, ratio)
    for r in range(4):
        assert set(torch.nonzero(mask[r]).flatten().tolist()) == _stable_lowest(score[r].tolist(), int(1024 * ratio))


def test_count_mask_ties_go_to_the_lower_column():
    score = torch.randint(0, 3, (3, 1024), generator=torch.Generator().manual_seed(1)).float()
    mask = count_mask(score, 1000)  # 334, 333, 333 per row
    assert mask.sum(1).tolist() == [334, 333, 333]
    for r in range(3):
        assert set(torch.nonzero(mask[r]).flatten().tolist()) == _stable_lowest(score[r].tolist(), 333 + (r == 0))


def test_count_mask_bounds_are_inclusive():
    score = torch.rand(3, 4)
    assert not count_mask(score, 0).any()
    assert count_mask(score, 12).all()
    for bad in (-1, 13):
        with pytest.raises(ValueError, match=f"cannot prune {bad} of 12 weights"):
            count_mask(score, bad)


def test_masks_are_built_on_the_score_device():
    # "meta" stands in for a GPU: a helper tensor made on the default device would move the mask off the score's.
    score = torch.empty(4, 8, device="meta")
    assert unstructured_mask(score, 0.5).device == score.device
    assert nm_mask(score, 2, 4).device == score.device
    assert count_mask(score, 5).device == score.device


def test_follows_nm_needs_whole_groups():
    assert follows_nm(torch.zeros(2, 8), 2, 4)
    assert not follows_nm(torch.zeros(2, 6), 2, 4)  # all zeros, but 6 columns are not groups of 4


def test_sparsity_is_the_zero_fraction():
    w = torch.tensor([[0.0, 1.0, -0.0, 2.0], [3.0, 0.0, 4.0, 5.0]])
    assert sparsity(w) == 3 / 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_masks_on_cuda_equal_the_cpu_masks():
    # the meta device accepts a CPU source in scatter_; CUDA does not, so this is where count_mask's arange is checked
    score = torch.randint(0, 3, (8, 64), generator=torch.Generator().manual_seed(2)).float()
    cuda = score.to("cuda")
    assert torch.equal(count_mask(cuda, 100).cpu(), count_mask(score, 100))
    assert torch.equal(nm_mask(cuda, 2, 4).cpu(), nm_mask(score, 2, 4))
    assert torch.equal(unstructured_mask(cuda, 0.5).cpu(), unstructured_mask(score, 0.5))


def _awkward_scores(rows: int, cols: int, seed: int) -> list[torch.Tensor]:
    """Random, heavily tied, and tied with NaN, +-inf and -0.0 mixed in (rows with more NaNs than numbers too)."""
    gen = torch.Generator().manual_seed(seed)
    plain = torch.randn(rows, cols, generator=gen)
    tied = torch.randint(0, 4, (rows, cols), generator=gen).float()
    odd = tied.clone()
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0])
    pick = torch.randint(0, 8, (rows, cols), generator=gen)
    odd[pick < 5] = specials[pick[pick < 5]]
    odd[0] = float("nan")  # a row of NaNs only
    odd[1, : cols // 4] = float("nan")
    odd[2, cols // 4 :] = float("nan")  # fewer numbers than a 0.5 mask prunes
    return [plain, tied, odd]


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.7, 0.99])
def test_unstructured_mask_equals_the_stable_sort_it_replaced(ratio):
    for score in _awkward_scores(9, 64, seed=3) + _awkward_scores(5, 1024, seed=4):
        assert torch.equal(unstructured_mask(score, ratio), masks_reference.unstructured_mask(score, ratio))


@pytest.mark.parametrize("n,m", [(2, 4), (4, 8), (1, 4), (3, 4), (1, 2)])
def test_nm_mask_equals_the_group_comparison_it_replaced(n, m):
    for score in _awkward_scores(9, 64, seed=5) + _awkward_scores(3, 1024, seed=6):
        assert torch.equal(nm_mask(score, n, m), masks_reference.nm_mask(score, n, m))
