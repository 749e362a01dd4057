import itertools

import pytest
import torch

from wandapp.errors import WandappError
from wandapp.masks import SparsityPattern, apply_mask, follows_nm, nm_mask, unstructured_mask
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
