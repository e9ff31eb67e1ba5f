"""The verdict engine (artstudy.stats) against independent references: scipy's t-tests and distributions, hand
formulas, brute-force permutation counts, and simulated studies with a known truth.

Simulation tolerances: a count of N simulated studies is accepted when it lies within the 99.9% binomial interval
(or below the 99.9% binomial quantile) of N draws at the rate theory gives, so a correct engine fails a check about
once in a thousand seeds, and every RNG seed is fixed so the suite is deterministic."""
import itertools
import numpy as np
import pytest
from scipy import stats as ss
from artstudy.stats import (bootstrap_paired, crossed_test, decide, format_effect, holm, jackknife_test,
                            min_detectable_effect, one_sample_test, paired_test, permutation_p, pilot_mde, pilot_power,
                            pilot_se, row_verdict, seeds_for, seeds_needed, simulate_correct, simulate_crossed,
                            simulate_paired, spearman_test, t_power, verdict)
from artstudy.stats import _crossed_p, _jackknife, _p_t, _pivot_sf, _simulate_corr

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
    assert format_effect(dict(row, p_adj=0.0369)) == \
        "+3.1 pts [+1.2, +5.0], p = 0.012 (Holm p = 0.037), n = 5, MDE 2.4 pts"
    assert format_effect(dict(row, p_adj=np.nan)) == format_effect(row)


# --- crossed seeds × images ----------------------------------------------------------------------------------------
# Simulated studies: one seed's mean difference has sd 1 (half from the seed effect, half from per-image noise) and the
# part every seed shares through the fixed test images has sd `ratio`. A false decisive rate passes when its count is at
# most the upper 99% binomial bound of N draws at the nominal rate (MAX5 for 2,000 draws at 5%); a documented failure
# must exceed that bound.
N_SIM, N_IMG = 2000, 200
MAX5 = ss.binom.ppf(0.99, N_SIM, 0.05)            # 123 of 2,000
SHARED = [(n, r) for n in (3, 4, 5) for r in (0.5, 1.)]

def _shared_images(n, ratio, effect=0., N=N_SIM, I=N_IMG, seed=0):
    return simulate_crossed(N, n, I, effect, np.sqrt(.5), ratio * np.sqrt(I), np.sqrt(.5 * I), seed=seed)

def _mean_squares(d):
    "Two-way ANOVA mean squares with plain loops (independent of the vectorised code)."
    n, I = len(d), len(d[0]); m = sum(map(sum, d)) / (n * I)
    rs = [sum(row) / I for row in d]; cs = [sum(row[i] for row in d) / n for i in range(I)]
    ms_s = I * sum((r - m) ** 2 for r in rs) / (n - 1)
    ms_i = n * sum((c - m) ** 2 for c in cs) / (I - 1)
    ms_r = sum((d[s][i] - rs[s] - cs[i] + m) ** 2 for s in range(n) for i in range(I)) / ((n - 1) * (I - 1))
    return m, ms_s, ms_i, ms_r

def test_crossed_test_by_hand():
    "Mean squares by loops; p as the defining integral over the seed mean square's χ² (scipy quad); CI, its quantile."
    from scipy.integrate import quad
    d = [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, -1]]
    m, ms_s, ms_i, ms_r = _mean_squares(d)
    a, b = ms_s / 12, (ms_i - ms_r) / 12
    assert b > 0
    gen_p = lambda x: quad(lambda w: 2 * ss.norm.sf(x / np.sqrt(a / w + b)) * 2 * ss.chi2.pdf(2 * w, 2), 0, np.inf)[0]
    r = crossed_test(d, delta=2.)
    assert (r["effect"], r["se"], r["mean"]) == pytest.approx((m, np.sqrt(a + b), m), rel=1e-12)
    assert r["p"] == pytest.approx(gen_p(m), rel=1e-7)
    assert gen_p(r["ci_high"] - m) == pytest.approx(0.05, rel=1e-6)
    assert r["ci_high"] - m == pytest.approx(m - r["ci_low"])
    assert gen_p(r["tost_high"] - m) == pytest.approx(0.10, rel=1e-6)
    assert ss.t.ppf(0.975, r["df"]) * r["se"] == pytest.approx(r["ci_high"] - m, rel=1e-9)   # df: same CI as Student
    one_sided = lambda x: gen_p(abs(x)) / 2 if x > 0 else 1 - gen_p(abs(x)) / 2
    assert r["p_tost"] == pytest.approx(max(one_sided(m + 2.), one_sided(2. - m)), rel=1e-6)
    assert (r["n"], r["n_images"], r["delta"], r["sd_diff"]) == (3, 4, 2., pytest.approx(np.std(np.mean(d, 1), ddof=1)))
    assert r["test"].startswith("crossed seeds × images")

@pytest.mark.parametrize("d", [[[1, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, -1]],                  # MS_image < MS_resid
                               [[0.3], [0.1], [0.25], [0.4]],                                  # one image
                               [[0.5, 0.5, 0.5], [0.1, 0.1, 0.1], [0.9, 0.9, 0.9]]])          # images add nothing
def test_crossed_test_is_the_paired_t_when_images_share_nothing(d):
    m, ms_s, ms_i, ms_r = _mean_squares(d) if len(d[0]) > 1 else (None, None, 0., 0.)
    assert ms_i <= ms_r
    r, ref = crossed_test(d), ss.ttest_1samp(np.mean(d, 1), 0.)
    ci = ref.confidence_interval(0.95)
    assert r["p"] == pytest.approx(ref.pvalue, rel=1e-9) and r["df"] == pytest.approx(len(d) - 1)
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((ci.low, ci.high), rel=1e-9)

def test_pivot_against_student_t_normal_and_monte_carlo():
    x = ss.t.isf([0.25, 0.025, 1e-4, 1e-8], 2)
    assert _pivot_sf(x, 1., 0., 2) == pytest.approx([0.25, 0.025, 1e-4, 1e-8], rel=1e-6)    # b = 0: Student's t
    assert _pivot_sf(2., 0., 1., 2) == pytest.approx(ss.norm.sf(2.), rel=1e-12)              # a = 0: a normal
    rng = np.random.default_rng(7)
    R = rng.normal(size=2_000_000) * np.sqrt(0.3 / (rng.chisquare(4, 2_000_000) / 4) + 0.7)
    for v in (0.5, 1.5, 3.):
        mc = (R > v).mean(); se = np.sqrt(mc * (1 - mc) / R.size)
        assert abs(_pivot_sf(v, 0.3, 0.7, 4) - mc) < 4 * se, v
    assert _pivot_sf(-1., 0.3, 0.7, 4) == pytest.approx(1 - _pivot_sf(1., 0.3, 0.7, 4))
    assert _pivot_sf(0., 0.3, 0.7, 4) == 0.5

def test_crossed_test_nan_rows_bad_input_and_untestable():
    d = [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, -1]]
    r = crossed_test(d + [[np.nan] * 4])
    assert r["n"] == 3 and r["p"] == pytest.approx(crossed_test(d)["p"], rel=1e-12)
    with pytest.raises(ValueError, match="whole row"): crossed_test([[1., np.nan], [0., 1.]])
    with pytest.raises(ValueError, match=r"\(seeds, images\)"): crossed_test([1., 0., 1.])
    for x, why in [(d[:1], "one seed"), ([[np.nan] * 4], "no values"), ([[1, 1], [1, 1]], "no spread")]:
        r = crossed_test(x)
        assert np.isnan([r["p"], r["ci_low"], r["p_tost"], r["power_obs"]]).all() and why in r["note"], x
        assert row_verdict(r) == "inconclusive" and row_verdict(r, delta=0.1) == "inconclusive"
    rows = [crossed_test(d, delta=1.), jackknife_test([.1, .3, .2], [[.1, .2], [.3, .3], [.2, .1]], delta=1.)]
    for r in rows: assert all(type(v) in (float, int, str) for v in r.values()), {k: type(v) for k, v in r.items()}

def test_vectorised_crossed_equals_crossed_test():
    d = _shared_images(4, 0.5, N=6, I=30, seed=1)
    eff, p, p_tost = _crossed_p(d, mu0=0.1, delta=1.)
    rows = [crossed_test(x, mu0=0.1, delta=1.) for x in d]
    assert [r["effect"] for r in rows] == pytest.approx(eff, rel=1e-12)
    assert [r["p"] for r in rows] == pytest.approx(p, rel=1e-12)
    assert [r["p_tost"] for r in rows] == pytest.approx(p_tost, rel=1e-12)

@pytest.mark.parametrize("n,ratio", SHARED)
def test_paired_t_over_seed_means_is_fooled_by_shared_images(n, ratio):
    "Documents the failure: the test images every seed shares are invisible to a t-test over seed means."
    p = ss.ttest_1samp(_shared_images(n, ratio, seed=n).mean(-1), 0., axis=1).pvalue
    assert (p < 0.05).sum() > MAX5, (p < 0.05).mean()

@pytest.mark.parametrize("n,ratio", SHARED)
def test_crossed_test_keeps_its_level_when_images_are_shared(n, ratio):
    "At 5%, and at 0.05/11 (Holm's first step for 11 rows)."
    p = _crossed_p(_shared_images(n, ratio, seed=n))[1]
    assert (p < 0.05).sum() <= MAX5, (p < 0.05).mean()
    assert (p < 0.05 / 11).sum() <= ss.binom.ppf(0.99, N_SIM, 0.05 / 11), (p < 0.05 / 11).mean()

@pytest.mark.parametrize("n,sd_seed", [(3, 0.1), (3, 0.2), (5, 0.1), (5, 0.2)])
def test_crossed_test_keeps_its_level_on_binary_correctness(n, sd_seed):
    "0/1 correctness of two equally good modes: each image has its own difficulty and a mode × image term."
    ca, cb = simulate_correct(N_SIM, n, 300, sd_seed=sd_seed, sd_image=0.6, seed=10 + n)
    p = _crossed_p(ca.astype(float) - cb)[1]
    assert (p < 0.05).sum() <= MAX5, (p < 0.05).mean()
    assert (p < 0.05 / 11).sum() <= ss.binom.ppf(0.99, N_SIM, 0.05 / 11), (p < 0.05 / 11).mean()

def test_a_run_once_baseline_fools_every_test():
    "Documents why baselines and controls are built per seed: a draw shared by all seeds and images is invisible."
    d = simulate_crossed(N_SIM, 5, N_IMG, 0., np.sqrt(.5), 0., np.sqrt(.5 * N_IMG), shared_sd=1., seed=3)
    assert (_crossed_p(d)[1] < 0.05).sum() > MAX5

# --- the image-group jackknife -------------------------------------------------------------------------------------

def test_jackknife_by_hand():
    rng = np.random.default_rng(3)
    values, reps = rng.normal(0.5, 0.1, 4), rng.normal(0.5, 0.1, (4, 6))
    n, G = reps.shape
    vbar = sum(values) / n
    s2 = sum((v - vbar) ** 2 for v in values) / (n - 1)
    rbar = [sum(reps[s][g] for s in range(n)) / n for g in range(G)]
    jack = (G - 1) / G * sum((x - sum(rbar) / G) ** 2 for x in rbar)
    se = np.sqrt(s2 / n + jack)
    df = (s2 / n + jack) ** 2 / ((s2 / n) ** 2 / (n - 1) + jack ** 2 / (G - 1))
    r = jackknife_test(values, reps, mu0=0.45, alpha=0.1, delta=0.2)
    assert (r["effect"], r["se"], r["df"]) == pytest.approx((vbar - 0.45, se, df), rel=1e-12)
    assert r["p"] == pytest.approx(2 * ss.t.sf(abs(vbar - 0.45) / se, df), rel=1e-9)
    assert r["ci_high"] == pytest.approx(vbar - 0.45 + ss.t.ppf(0.95, df) * se, rel=1e-9)
    e = vbar - 0.45
    assert r["p_tost"] == pytest.approx(max(ss.t.sf((e + 0.2) / se, df), ss.t.cdf((e - 0.2) / se, df)))
    assert (r["n"], r["n_groups"], r["test"]) == (4, 6, "seeds + image-group jackknife (Satterthwaite df)")

def test_jackknife_delete_one_of_a_mean_is_the_standard_error_over_images():
    "Leaving out one image at a time, the jackknife part of a mean statistic is s²/I of the image means, exactly."
    x = np.random.default_rng(4).normal(size=(3, 25)); I = x.shape[1]
    reps = (x.sum(1, keepdims=True) - x) / (I - 1)
    r = jackknife_test(x.mean(1), reps)
    assert r["se"] ** 2 == pytest.approx(x.mean(1).var(ddof=1) / 3 + x.mean(0).var(ddof=1) / I, rel=1e-12)

def test_jackknife_bad_input_nan_and_untestable():
    values, reps = [0.2, 0.3, np.nan, 0.25], [[0.2, 0.21], [0.3, 0.28], [0.1, 0.1], [0.26, np.nan]]
    r = jackknife_test(values, reps)
    assert r["n"] == 2 and r["p"] == pytest.approx(jackknife_test(values[:2], reps[:2])["p"])
    with pytest.raises(ValueError, match="shape"): jackknife_test([0.2, 0.3], [[0.2, 0.2]])
    with pytest.raises(ValueError, match="shape"): jackknife_test([0.2, 0.3], [[0.2], [0.3]])
    assert "one seed" in jackknife_test([0.2], [[0.2, 0.3]])["note"]

@pytest.mark.parametrize("n", [3, 5])
def test_jackknife_keeps_its_level_with_shared_images(n):
    "Per-seed correlations over the same test images: the images' own sample correlation is shared by every seed."
    values, reps = _simulate_corr(N_SIM, n, N_IMG, 20, sd_noise=0.5, seed=n)
    m, se, df = _jackknife(values, reps)
    assert (_p_t(m, se, df) < 0.05).sum() <= MAX5
    assert (ss.ttest_1samp(values, 0., axis=1).pvalue < 0.05).sum() > MAX5   # what a t over seeds alone would do

# --- Holm ----------------------------------------------------------------------------------------------------------

def test_holm_by_hand():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → 0.06 (never below the step before)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005, np.nan])[:4], [0.03, 0.06, 0.06, 0.02], rtol=1e-12)
    assert np.isnan(holm([0.01, 0.04, 0.03, 0.005, np.nan])[4])
    np.testing.assert_allclose(holm([0.5, 0.6, 0.01]), [1., 1., 0.03])                      # capped at 1, monotone
    np.testing.assert_allclose(holm([0.02]), [0.02]) and holm([]).shape == (0,)
    np.testing.assert_allclose(holm([[0.01, 0.02], [0.03, np.nan]]), [[0.03, 0.04], [0.04, np.nan]])

def test_holm_keeps_the_familywise_rate():
    "Families of 11 independent null rows (crossed tests): ~43% with a false decisive row unadjusted, ≤ 5% with Holm."
    p = _crossed_p(_shared_images(3, 0., N=11 * N_SIM, I=40, seed=30))[1].reshape(N_SIM, 11)
    assert (p < 0.05).any(1).sum() > ss.binom.ppf(0.999, N_SIM, 0.3)
    assert sum((holm(row) < 0.05).any() for row in p) <= MAX5

# --- pilot MDE and power -------------------------------------------------------------------------------------------

def test_pilot_helpers():
    pilot = dict(sd=0.02, se_shared=0.005, source="test")
    assert pilot_se(pilot, 4) == pytest.approx(np.sqrt(0.02 ** 2 / 4 + 0.005 ** 2))
    assert pilot_mde(dict(pilot, se_shared=0.), 5) == pytest.approx(min_detectable_effect(0.02, 5), rel=1e-12)
    assert pilot_power(pilot_mde(pilot, 5), pilot, 5) == pytest.approx(0.8, abs=1e-9)
    assert pilot_power(-0.05, pilot, 5) == pilot_power(0.05, pilot, 5)
    n = seeds_for(0.03, pilot)
    assert pilot_mde(pilot, n) <= 0.03 < pilot_mde(pilot, n - 1)
    assert seeds_for(0.014, pilot) is None               # (1.96 + 0.84)·0.005 = 0.014: no number of seeds reaches it
    assert seeds_for(0.0141, pilot, n_max=50) is None    # reachable only beyond n_max
    assert np.isnan(pilot_mde(None, 5)) and np.isnan(pilot_mde(pilot, 1)) and np.isnan(pilot_power(0.1, None, 5))
    for bad in (dict(sd=0.02), dict(sd=-1, source="x"), None, dict(sd=0.02, se_shared=-0.1, source="x")):
        with pytest.raises(ValueError, match="pilot"): pilot_se(bad, 5)

def test_mde_and_power_come_only_from_a_pilot():
    d = [[1, 1, 0, 0], [1, 1, 1, 0], [1, 0, 0, -1]]
    r = crossed_test(d)
    assert np.isnan(r["mde"]) and np.isnan(r["power_obs"])      # never the sd of the data being judged
    pilot = dict(sd=0.4, se_shared=0.1, source="test")
    r = crossed_test(d, pilot=pilot)
    assert r["mde"] == pilot_mde(pilot, 3) and r["power_obs"] == pilot_power(r["effect"], pilot, 3)
    r = jackknife_test([0.1, 0.3, 0.2], [[0.1, 0.2], [0.3, 0.3], [0.2, 0.1]], pilot=pilot)
    assert r["mde"] == pilot_mde(pilot, 3)

@pytest.mark.parametrize("n,ratio", [(3, 0.5), (5, 0.5), (5, 1.)])
def test_pilot_mde_has_its_power_by_simulation(n, ratio):
    "Studies simulated at the pilot's MDE are decided 'reproduced' at least 80% of the time (lower 99% binomial bound)."
    pilot = dict(sd=1., se_shared=ratio, source="the simulation's own truth")
    eff, p, _ = _crossed_p(_shared_images(n, ratio, effect=pilot_mde(pilot, n), seed=20 + n))
    assert ((p < 0.05) & (eff > 0)).sum() >= ss.binom.ppf(0.01, N_SIM, 0.8)

# --- row verdicts --------------------------------------------------------------------------------------------------

def test_row_verdict():
    r = crossed_test([[0.04, 0.03, 0.05, 0.06], [0.02, 0.05, 0.04, 0.03], [0.05, 0.04, 0.06, 0.05]])
    assert r["p"] < 0.05 and row_verdict(r) == "reproduced" and row_verdict(r, direction=-1) == "reversed"
    assert row_verdict(r, p_adj=0.06) == "inconclusive" and row_verdict(r, p_adj=0.06, delta=0.001) == "inconclusive"
    assert row_verdict(r, decisive_ok=False, why="2 runs stopped at their epoch cap") == \
        "inconclusive (2 runs stopped at their epoch cap)"
    assert row_verdict(r, decisive_ok=False).startswith("inconclusive (")
    assert row_verdict(dict(r, effect=-r["effect"])) == "reversed"
    flat = crossed_test([[0.002, -0.001, 0.001, 0.0], [0.0, 0.001, -0.002, 0.001], [0.001, 0.0, 0.001, -0.001]],
                        delta=0.01)
    assert flat["p_tost"] < 0.05 and row_verdict(flat, delta=0.01) == "equivalent within ±0.01"
    assert row_verdict(flat, delta=0.01, p_tost_adj=0.2) == "inconclusive"
    assert row_verdict(flat, delta=0.01, decisive_ok=False, why="unconverged") == "inconclusive (unconverged)"
    with pytest.raises(ValueError, match="margin"): row_verdict(flat, delta=0.02)
    for a, b in FIXED:   # rows without a p_tost of their own: two one-sided t-tests from effect, se, df
        t = paired_test(a, b)
        for delta in (0.02, 0.5, 3.):
            eq = lambda v: v.startswith("equivalent")
            assert eq(row_verdict(t, delta=delta)) == eq(verdict(t, delta=delta)), (a, delta)
    with pytest.raises(ValueError, match="direction"): row_verdict(r, direction=0)
    with pytest.raises(ValueError, match="margin"): row_verdict(r, delta=0.)

def test_tost_keeps_its_level_at_the_margin():
    "True effect exactly at the margin: 'equivalent' at most 5% of the time; at no effect, often (both outcomes seen)."
    delta = 2.
    at_margin = _crossed_p(_shared_images(5, 0.5, effect=delta, seed=40), delta=delta)[2]
    at_zero = _crossed_p(_shared_images(5, 0.5, effect=0., seed=41), delta=delta)[2]
    assert (at_margin < 0.05).sum() <= MAX5 and (at_zero < 0.05).mean() > 0.3
