"""The verdict engine (artstudy.stats) against independent references: scipy's t-tests and distributions, hand
formulas, brute-force permutation counts, and simulated studies with a known truth.

Simulation tolerances: a count of N simulated studies is accepted when it lies within the 99.9% binomial interval
(or below the 99.9% binomial quantile) of N draws at the rate theory gives, so a correct engine fails a check about
once in a thousand seeds, and every RNG seed is fixed so the suite is deterministic."""
import itertools
import numpy as np
import pytest
from scipy import stats as ss
from artstudy.stats import (bootstrap_paired, decide, format_effect, min_detectable_effect, one_sample_test,
                            paired_test, permutation_p, seeds_needed, simulate_paired, spearman_test, t_power, verdict)

FIXED = [([0.42, 0.45, 0.40, 0.47, 0.44], [0.40, 0.41, 0.39, 0.43, 0.44]),
         ([0.61, 0.58, 0.66], [0.50, 0.55, 0.49]),
         ([12.0, 15.5, 9.1, 11.3, 14.2, 10.0, 13.3], [13.1, 14.0, 10.2, 12.9, 14.4, 11.7, 13.0])]

def _verdicts(a, b, **kw): return np.array([decide(x, y, **kw)["verdict"] for x, y in zip(a, b)])

# --- the t-test against scipy and by hand -------------------------------------------------------------------------

@pytest.mark.parametrize("a,b", FIXED)
def test_paired_test_equals_scipy_ttest_rel(a, b):
    r, ref = paired_test(a, b), ss.ttest_rel(a, b)
    ci = ref.confidence_interval(0.95)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-10)
    assert r["t"] == pytest.approx(ref.statistic, rel=1e-10) and r["df"] == ref.df == len(a) - 1
    assert r["test"] == "paired t" and r["n"] == len(a)

@pytest.mark.parametrize("a,b", FIXED)
def test_paired_test_equals_hand_computation(a, b):
    d = [x - y for x, y in zip(a, b)]; n = len(d); m = sum(d) / n
    sd = (sum((x - m) ** 2 for x in d) / (n - 1)) ** 0.5; se = sd / n ** 0.5
    r = paired_test(a, b, alpha=0.1)
    half = ss.t.ppf(0.95, n - 1) * se
    assert (r["effect"], r["sd_diff"], r["se"]) == pytest.approx((m, sd, se), rel=1e-12)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((m - half, m + half), rel=1e-12)
    assert r["p"] == pytest.approx(2 * ss.t.cdf(-abs(m / se), n - 1), rel=1e-10)
    # the (1 - 2 alpha) interval used by TOST
    half2 = ss.t.ppf(0.9, n - 1) * se
    assert (r["tost_low"], r["tost_high"]) == pytest.approx((m - half2, m + half2), rel=1e-12)

def test_one_sample_test_equals_scipy_against_mu0():
    d = [0.31, 0.28, 0.35, 0.22, 0.30, 0.27]
    r, ref = one_sample_test(d, mu0=0.25), ss.ttest_1samp(d, 0.25)
    ci = ref.confidence_interval(0.95)
    assert r["effect"] == pytest.approx(np.mean(d) - 0.25) and r["mean"] == pytest.approx(np.mean(d))
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-10)
    assert (r["ci_low"] + 0.25, r["ci_high"] + 0.25) == pytest.approx((ci.low, ci.high), rel=1e-10)

def test_results_are_plain_python_values():
    r = decide(*FIXED[0])
    assert all(type(v) in (float, int, str) for v in r.values()), {k: type(v) for k, v in r.items()}

def test_nan_drops_the_pair_and_misaligned_input_is_an_error():
    r = paired_test([0.5, np.nan, 0.6, 0.7, 0.2], [0.4, 0.5, 0.5, 0.5, np.nan])
    ref = ss.ttest_rel([0.5, 0.6, 0.7], [0.4, 0.5, 0.5])
    assert (r["n"], r["dropped"]) == (3, 2) and r["p"] == pytest.approx(ref.pvalue)
    with pytest.raises(ValueError, match="same seed order"): paired_test([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="1-D"): paired_test([[1, 2]], [[1, 2]])

@pytest.mark.parametrize("a,b,why", [([0.5], [0.4], "one seed"), ([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], "sd = 0"),
                                     ([np.nan], [0.4], "no values")])
def test_untestable_cases_are_inconclusive_with_a_note(a, b, why):
    r = decide(a, b)
    assert np.isnan(r["ci_low"]) and np.isnan(r["p"]) and np.isnan(r["mde"])
    assert r["verdict"] == "inconclusive" and why in r["note"]
    assert decide(a, b, delta=0.5)["verdict"] == "inconclusive"

# --- verdicts ------------------------------------------------------------------------------------------------------

def test_verdict_reads_the_ci():
    row = lambda lo, hi: dict(ci_low=lo, ci_high=hi, tost_low=lo / 2, tost_high=hi / 2)
    assert verdict(row(0.1, 0.3)) == "reproduced" and verdict(row(0.1, 0.3), direction=-1) == "reversed"
    assert verdict(row(-0.3, -0.1)) == "reversed" and verdict(row(-0.3, -0.1), direction=-1) == "reproduced"
    assert verdict(row(-0.1, 0.3)) == "inconclusive" and verdict(row(np.nan, np.nan)) == "inconclusive"
    assert verdict(row(-0.1, 0.1), delta=0.06) == "equivalent within ±0.06"   # 90% CI (-0.05, 0.05)
    assert verdict(row(-0.1, 0.1), delta=0.04) == "inconclusive"
    assert verdict(row(0.1, 0.3), delta=0.05) == "not equivalent"
    with pytest.raises(ValueError, match="direction"): verdict(row(0, 1), direction=0)
    with pytest.raises(ValueError, match="margin"): verdict(row(0, 1), delta=-1)

@pytest.mark.parametrize("n", [3, 5])
def test_false_verdicts_under_the_null(n):
    "1,000 null studies: each false verdict ≤ the 99.9% binomial quantile at 2.5%, both ≤ that at 5%, and the verdicts are scipy's decisions."
    a, b = simulate_paired(1000, n, effect=0., sd_seed=3., sd_noise=1., seed=100 + n)
    v = _verdicts(a, b)
    np.testing.assert_array_equal(v != "inconclusive", ss.ttest_rel(a, b, axis=1).pvalue < 0.05)
    fr, fv = (v == "reproduced").sum(), (v == "reversed").sum()
    assert fr <= ss.binom.ppf(0.999, 1000, 0.025) and fv <= ss.binom.ppf(0.999, 1000, 0.025), (fr, fv)
    assert fr + fv <= ss.binom.ppf(0.999, 1000, 0.05), (fr, fv)

@pytest.mark.parametrize("n,effect_sd", [(5, 2.), (5, 1.), (3, 2.)])
def test_power_matches_the_noncentral_t(n, effect_sd):
    "A true effect of `effect_sd` sd of the differences: the share of 'reproduced' is nct's P(T > t_crit)."
    sd_d = np.sqrt(2.)
    a, b = simulate_paired(2000, n, effect=effect_sd * sd_d, sd_seed=3., seed=200 + n)
    hit = (_verdicts(a, b) == "reproduced").sum()
    expected = ss.nct.sf(ss.t.ppf(0.975, n - 1), n - 1, effect_sd * np.sqrt(n))
    lo, hi = ss.binom.interval(0.999, 2000, expected)
    assert lo <= hit <= hi, (hit, lo, hi, expected)

@pytest.mark.parametrize("n", [3, 5, 10])
def test_mde_gives_power_080_by_simulation(n):
    sigma = 0.02
    z = np.random.default_rng(n).normal(size=n); z = (z - z.mean()) / z.std(ddof=1) * sigma   # sample sd exactly sigma
    mde = paired_test(z + 0.5, np.full(n, 0.5))["mde"]
    assert mde > 2.8016 * sigma / np.sqrt(n)          # the exact MDE is larger than the normal shortcut
    d = np.random.default_rng(300 + n).normal(mde, sigma, (3000, n))
    detected = (_verdicts(d, np.zeros_like(d)) != "inconclusive").sum()
    lo, hi = ss.binom.interval(0.999, 3000, 0.8)
    assert lo <= detected <= hi, (detected, lo, hi)

def test_power_helpers():
    # independent of scipy's nct: T = (Z + λ)/√(V/df) with V ~ χ²(df), integrated over V numerically
    from scipy.integrate import quad
    def power_by_integration(lam, df, alpha=0.05):
        tc = ss.t.ppf(1 - alpha / 2, df)
        f = lambda v: (ss.norm.sf(tc * np.sqrt(v / df) - lam) + ss.norm.cdf(-tc * np.sqrt(v / df) - lam)) * ss.chi2.pdf(v, df)
        return quad(f, 0, np.inf)[0]
    for n in (2, 3, 5, 10):
        lam = min_detectable_effect(1., n) * np.sqrt(n)
        assert power_by_integration(lam, n - 1) == pytest.approx(0.8, abs=1e-6)
        assert t_power(1.3, 1., n) == pytest.approx(power_by_integration(1.3 * np.sqrt(n), n - 1), abs=1e-6)
    assert t_power(min_detectable_effect(0.7, 4), 0.7, 4) == pytest.approx(0.8, abs=1e-9)
    n = seeds_needed(0.03, 0.02)
    assert t_power(0.03, 0.02, n) >= 0.8 > t_power(0.03, 0.02, n - 1)
    assert np.isnan(min_detectable_effect(1., 1)) and np.isnan(t_power(1., 0., 5))

def test_equivalence_keeps_its_level_at_the_margin():
    "TOST: with the true effect exactly at the margin δ, 'equivalent' comes out at most alpha = 5% of the time."
    delta = 1.
    a, b = simulate_paired(1000, 10, effect=delta, sd_seed=3., seed=400)
    eq = (_verdicts(a, b, delta=delta) == "equivalent within ±1").sum()
    assert eq <= ss.binom.ppf(0.999, 1000, 0.05), eq
    # and every equivalence verdict is scipy's two one-sided tests, study by study
    a, b = simulate_paired(1000, 5, effect=0.3, sd_seed=3., seed=401)
    d = a - b
    tost = (ss.ttest_1samp(d, -delta, axis=1, alternative="greater").pvalue < 0.05) & \
           (ss.ttest_1samp(d, delta, axis=1, alternative="less").pvalue < 0.05)
    np.testing.assert_array_equal(_verdicts(a, b, delta=delta) == "equivalent within ±1", tost)
    assert 50 < tost.sum() < 950   # the check compares both outcomes, not only one

# --- permutation p-values ------------------------------------------------------------------------------------------

def test_permutation_p_equals_brute_force_enumeration():
    x = np.array([3.1, 4.2, 5.0, 6.3, 1.0, 2.2, 2.9, 4.1, 3.3]); k = 4
    stat = lambda m: x[m].mean() - x[~m].mean()
    masks = [np.isin(np.arange(len(x)), g) for g in itertools.combinations(range(len(x)), k)]
    allstats = np.array([stat(m) for m in masks]); obs = allstats[0]   # the first split is the observed grouping
    N = len(allstats)  # 126
    exact_ge, exact_le = (allstats >= obs - 1e-12).sum() / N, (allstats <= obs + 1e-12).sum() / N
    assert permutation_p(obs, allstats[1:], "greater") == pytest.approx(exact_ge, abs=1e-12)
    assert permutation_p(obs, allstats[1:], "less") == pytest.approx(exact_le, abs=1e-12)
    assert permutation_p(obs, allstats[1:]) == pytest.approx(min(1, 2 * min(exact_ge, exact_le)), abs=1e-12)

def test_permutation_p_sign_flip_brute_force_and_random_draws():
    "One-sample sign flips: the exact p over all 2^8 flips, approached by random flips within binomial error."
    d = np.array([0.8, 1.2, -0.3, 0.9, 0.4, 1.5, -0.1, 0.7]); obs = d.mean()
    flips = np.array(list(itertools.product([1, -1], repeat=len(d))))
    allstats = (flips * d).mean(1)
    exact = (allstats >= obs - 1e-12).sum() / len(allstats)
    assert permutation_p(obs, allstats[1:], "greater") == pytest.approx(exact, abs=1e-12)   # row 0: no flip = observed
    rnd = (np.random.default_rng(0).choice([1, -1], size=(20_000, len(d))) * d).mean(1)
    lo, hi = ss.binom.interval(0.999, 20_000, exact)
    assert (lo - 1) / 20_001 <= permutation_p(obs, rnd, "greater") <= (hi + 1) / 20_001

def test_permutation_p_edges():
    assert permutation_p(5., [0., 1., 2.], "greater") == 0.25      # never 0: the observed counts itself
    assert permutation_p(5., [0., 1., 2.], "less") == 1.0
    assert permutation_p(1., [0., 1., 2., np.nan], "two-sided") == 1.0
    with pytest.raises(ValueError, match="alternative"): permutation_p(0., [1.], "both")
    with pytest.raises(ValueError, match="finite null"): permutation_p(0., [np.nan])

# --- bootstrap and Spearman ----------------------------------------------------------------------------------------

def test_bootstrap_one_seed_matches_the_standard_error_over_images():
    rng = np.random.default_rng(11)   # not the bootstrap's seed: the same stream would correlate draws and data
    ca, cb = rng.random((1, 2000)) < 0.6, rng.random((1, 2000)) < 0.5
    r = bootstrap_paired(ca, cb, n_boot=4000, seed=1)
    d = (ca.astype(float) - cb).ravel(); se = d.std() / np.sqrt(d.size)
    assert r["effect"] == pytest.approx(ca.mean() - cb.mean(), abs=1e-12)
    assert r["se"] == pytest.approx(se, rel=0.06)                                 # 4,000 draws: SE of an SE ~1.1%
    assert r["p"] == pytest.approx(2 * ss.norm.sf(abs(d.mean()) / se), abs=0.01)   # large-sample normal p
    assert "one seed" in r["note"] and (r["n"], r["n_images"]) == (1, 2000)

def test_bootstrap_seed_level_matches_the_standard_error_over_seeds():
    "When every image of a seed has the same difference, only the seed level varies: SE = sd_ddof0(seed means)/√S."
    c = np.array([0.02, 0.05, -0.01, 0.04, 0.03])
    d = np.repeat(c[:, None], 300, axis=1)
    r = bootstrap_paired(d, np.zeros_like(d), n_boot=4000, seed=2)
    assert r["effect"] == pytest.approx(c.mean()) and r["n"] == 5
    assert r["se"] == pytest.approx(c.std() / np.sqrt(5), rel=0.06)
    with pytest.raises(ValueError, match="same seeds and test images"): bootstrap_paired(d, d[:, :10])
    with pytest.raises(ValueError, match="NaN"): bootstrap_paired(d * np.nan, d)

def test_spearman_matches_scipy_and_a_fisher_z_interval():
    rng = np.random.default_rng(5)
    x = rng.normal(size=60); y = x + rng.normal(size=60)
    r, ref = spearman_test(x, y, n_boot=4000), ss.spearmanr(x, y)
    assert (r["rho"], r["p"], r["effect"]) == pytest.approx((ref.statistic, ref.pvalue, ref.statistic), rel=1e-12)
    # Fieller, Hartley & Pearson (1957): atanh(rho) has se ≈ 1.06/√(n−3); the bootstrap CI should be close to it
    z, se = np.arctanh(ref.statistic), 1.06 / np.sqrt(57)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(np.tanh([z - 1.96 * se, z + 1.96 * se]), abs=0.05)
    assert verdict(r) == "reproduced"

def test_spearman_untestable():
    assert np.isnan(spearman_test([1, 2], [2, 1])["rho"])
    assert np.isnan(spearman_test([1, 1, 1, 1], [1, 2, 3, 4])["p"])
    with pytest.raises(ValueError, match="paired values"): spearman_test([1, 2, 3], [1, 2])

def test_format_effect():
    row = dict(effect=0.031, ci_low=0.012, ci_high=0.050, p=0.0123, n=5, mde=0.024)
    assert format_effect(row) == "+3.1 pts [+1.2, +5.0], p = 0.012, n = 5, MDE 2.4 pts"
    assert format_effect(row, scale=1, digits=3) == "+0.031 pts [+0.012, +0.050], p = 0.012, n = 5, MDE 0.024 pts"
    assert format_effect(dict(row, effect=-0.2, ci_low=-0.3, ci_high=-0.1, p=1e-4), unit="") == \
        "-0.200 [-0.300, -0.100], p < 0.001, n = 5, MDE 0.024"
    assert format_effect(decide([0.5], [0.4])) == "+10.0 pts [no CI], p = –, n = 1"
