"""The linear algebra of low-rank splits, on plain matrices (no graphs here).

Every factorizable layer is seen as y = x W (+ bias) with W of shape [in, out]: a MatMul's weight, a Gemm's
(transposed) weight, or a Conv weight reshaped to [Cin*kh*kw, Cout] acting on im2col patches.

Weight SVD keeps the top right-singular directions of W: W_r = W V_r V_r^T.

Data-aware SVD minimizes the *output* error E||x W - x W'||^2 over rank-r W'. With C the input covariance
and S = C^(1/2), the optimum is the truncated SVD of S W mapped back; its column space is spanned by the top
eigenvectors V_r of the output covariance F = W^T C W, so W' = W V_r V_r^T. Working on the output side
needs only an out x out matrix, which for a Conv avoids the (Cin*k*k)^2 covariance of im2col patches.

Sequential correction: when the layer's input already carries the error of earlier compressed layers
(x_c instead of x_o), let z = x_c W (the original layer on the compressed model's input) and
y = x_o W (the original model's output). Reduced-rank regression fits y ~ z T with rank(T) <= r:
T_ls = argmin E||y - z T||^2 (ridge-shrunk towards I), then T = T_ls V_r V_r^T with V_r the top eigenvectors
of the fitted covariance T_ls^T C_zz T_ls. The layer becomes x (W T_ls V_r) (V_r^T). Without earlier error,
z = y, T_ls = I and this is exactly data-aware SVD.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class OutputStats:
    """Second-order statistics of a layer's output, on the output side (all out x out, float64).

    czz: covariance of z (the original layer applied to the current model's input);
    czy: cross-covariance of z with y (the original model's output of this layer);
    cyy: covariance of y; mean_z, mean_y: means. Centered when the layer has a bias that can absorb the
    mean correction, else raw second moments with zero means.
    """
    czz: np.ndarray
    czy: np.ndarray
    cyy: np.ndarray
    mean_z: np.ndarray
    mean_y: np.ndarray
    metric: np.ndarray | None = None  # S (symmetric): fit and measure errors on y S instead of y (attention.py)

    @classmethod
    def same(cls, cov: np.ndarray, mean: np.ndarray) -> "OutputStats":
        """Stats for a layer whose input carries no earlier error (z = y)."""
        return cls(cov, cov, cov, mean, mean)


@dataclass
class Fit:
    """A rank-r projection of the output space: W' = W @ left @ right (+ bias_shift added to the bias)."""
    left: np.ndarray        # [out, r]  (T_ls V_r)
    right: np.ndarray       # [r, out]  (V_r^T)
    bias_shift: np.ndarray  # [out]
    errors: np.ndarray      # errors[r] = relative output error at rank r, for r = 0..out


def ridge_towards_identity(czz: np.ndarray, czy: np.ndarray, ridge: float) -> np.ndarray:
    """argmin_T E||y - z T||^2 + lam ||T - I||^2, with lam = ridge * mean eigenvalue of C_zz.

    Shrinking towards I (not 0) means "leave the output alone" where the calibration data says little.
    """
    d = czz.shape[0]
    lam = ridge * max(np.trace(czz) / d, 1e-30)
    return np.eye(d) + np.linalg.solve(czz + lam * np.eye(d), czy - czz)


def reduced_rank_fit(stats: OutputStats, ridge: float = 1.0) -> Fit:
    """Output-space reduced-rank regression; `errors` gives the relative error at every rank.

    With a metric S the fit is made on y S ~ z S L R and mapped back: left = S L, right = R S^-1; the errors
    are then relative errors in that metric.
    """
    if stats.metric is not None:
        s = stats.metric
        czz = s @ stats.czz @ s
        czy = czz if stats.czz is stats.czy else s @ stats.czy @ s
        fit = reduced_rank_fit(OutputStats(czz, czy, s @ stats.cyy @ s, stats.mean_z @ s, stats.mean_y @ s), ridge)
        return Fit(left=s @ fit.left, right=fit.right @ np.linalg.pinv(s), bias_shift=fit.bias_shift, errors=fit.errors)
    exact = stats.czz is stats.czy
    # without earlier error T_ls = I: the products with I below are skipped (they return their other
    # operand bit for bit: every term but one is an exact zero), 5 of the 6 n^3 products of a general fit
    t_ls = None if exact else ridge_towards_identity(stats.czz, stats.czy, ridge)
    fitted = stats.czz if exact else t_ls.T @ stats.czz @ t_ls
    fitted = (fitted + fitted.T) / 2
    eigvals, eigvecs = np.linalg.eigh(fitted)
    order = np.argsort(eigvals)[::-1]
    v = eigvecs[:, order]
    # E||y - z T_ls P_r||^2 = tr(Cyy) - 2 tr(P_r T_ls^T Czy) + tr(P_r F), summed direction by direction
    cross = quadratic_diagonal(v, stats.czy if exact else t_ls.T @ stats.czy)
    own = cross if exact and _symmetric(stats.czz) else quadratic_diagonal(v, fitted)
    total = max(float(np.trace(stats.cyy)), 1e-30)
    err = float(np.trace(stats.cyy)) - np.concatenate([[0.0], np.cumsum(2 * cross - own)])
    errors = np.maximum(err, 0.0) / total
    return Fit(left=v if exact else t_ls @ v, right=v.T, bias_shift=np.zeros(0), errors=errors)


def _symmetric(m: np.ndarray) -> bool:
    """Is m exactly symmetric (then (m + m^T) / 2 is m bit for bit)?"""
    return bool(np.array_equal(m, m.T))


def quadratic_diagonal(v: np.ndarray, m: np.ndarray) -> np.ndarray:
    """[v_j^T m v_j for each column j]. A three-operand einsum computes this in an unblocked loop: 4.1 s of
    CPU for a 1536-wide FFN layer against 0.17 s through one BLAS product (same values within 1e-13)."""
    return np.einsum("ij,ij->j", v, m @ v)


def plain_error(stats: OutputStats, left: np.ndarray, right: np.ndarray) -> float:
    """Relative output error (no metric) of y ~ z left right on original-model statistics (z = y)."""
    e = np.eye(left.shape[0]) - left @ right
    return max(float(np.trace(e.T @ stats.cyy @ e)), 0.0) / max(float(np.trace(stats.cyy)), 1e-30)


def projection_at(fit: Fit, stats: OutputStats, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(left_r [out, r], right_r [r, out], bias shift [out]) so that y ~ z @ left_r @ right_r + shift."""
    left, right = fit.left[:, :rank], fit.right[:rank]
    shift = stats.mean_y - stats.mean_z @ left @ right
    return left, right, shift


def weight_svd_errors(w: np.ndarray, cov: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Right singular vectors of W [in, out] (columns, by decreasing sigma) and relative errors per rank.

    With `cov` (the output covariance W^T C W) the errors are output errors on that data, tr(P_perp F)/tr(F);
    without, the weight's own relative Frobenius error.
    """
    _, s, vt = np.linalg.svd(w, full_matrices=False)
    v = vt.T  # [out, min(in, out)]; directions beyond carry no output energy
    energy = s**2 if cov is None else quadratic_diagonal(v, cov)
    total = max(float(energy.sum()), 1e-30)
    errors = np.concatenate([[total], total - np.cumsum(energy)]) / total
    errors = np.concatenate([errors, np.full(w.shape[1] - s.size, errors[-1])])  # one entry per rank 0..out
    return v, np.maximum(errors, 0.0)


def output_space_factors(w: np.ndarray, left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """W [in, out] ~ A [in, r] @ B [r, out] with A = W @ left, B = right."""
    return w @ left, right


def spatial_factors(kernel: np.ndarray, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Jaderberg-style split of a Conv kernel [Cout, Cin, kh, kw] into a kh x 1 and a 1 x kw Conv.

    Returns (vertical [r, Cin, kh, 1], horizontal [Cout, r, 1, kw], relative weight error per rank). The
    kernel as a matrix M[(c, i), (o, j)] = W[o, c, i, j] has rank <= r exactly when the split is exact.
    """
    cout, cin, kh, kw = kernel.shape
    m = kernel.transpose(1, 2, 0, 3).reshape(cin * kh, cout * kw)
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    root = np.sqrt(s[:rank])
    vertical = (u[:, :rank] * root).T.reshape(rank, cin, kh, 1)
    horizontal = (root[:, None] * vt[:rank]).reshape(rank, cout, kw).transpose(1, 0, 2)[:, :, None, :]
    energy = s**2
    total = max(float(energy.sum()), 1e-30)
    errors = np.maximum(np.concatenate([[total], total - np.cumsum(energy)]) / total, 0.0)
    return vertical, horizontal, errors


def spatial_errors(kernel: np.ndarray) -> np.ndarray:
    cout, cin, kh, kw = kernel.shape
    s = np.linalg.svd(kernel.transpose(1, 2, 0, 3).reshape(cin * kh, cout * kw), compute_uv=False)
    total = max(float((s**2).sum()), 1e-30)
    return np.maximum(np.concatenate([[total], total - np.cumsum(s**2)]) / total, 0.0)


@dataclass
class PatchStats:
    """Statistics of a Conv layer's im2col input patches, features ordered (Cin, kh, kw) like W's rows.

    cov: centered covariance when the layer has a bias (the mean shift goes into it), else the raw second
    moment; mean: the mean patch (zeros without a bias).
    """
    cov: np.ndarray
    mean: np.ndarray


def _spatial_refit(kernel: np.ndarray, cov: np.ndarray, u: np.ndarray, ridge: float = 1e-9):
    """Given the vertical factor's column space U [(Cin, kh), r], the least-squares horizontal factor.

    The vertical Conv gives features phi[(r, j)] = sum_(c,i) U[(c,i), r] x[(c,i,j)] (j = horizontal tap), and
    the output is linear in phi, so the best second factor solves G H = B with G = E[phi phi^T],
    B = E[phi y^T]. Returns (H [r*kw, Cout], output error E||y - y'||^2, E||y||^2).
    """
    cout, cin, kh, kw = kernel.shape
    r = u.shape[1]
    w = kernel.reshape(cout, -1).T                       # [(c,i,j), o]
    c4 = cov.reshape(cin * kh, kw, cin * kh, kw)
    g = np.einsum("ar,ajbk,bs->rjsk", u, c4, u, optimize=True).reshape(r * kw, r * kw)
    cw = (cov @ w).reshape(cin * kh, kw, cout)
    b = np.einsum("ar,ajo->rjo", u, cw).reshape(r * kw, cout)
    lam = ridge * max(np.trace(g) / max(g.shape[0], 1), 1e-30)
    h = np.linalg.solve(g + lam * np.eye(g.shape[0]), b)
    total = float(np.sum(w * (cov @ w)))
    err = total - float(np.sum(h * b)) * 2 + float(np.sum(h * (g @ h)))
    return h, max(err, 0.0), max(total, 1e-30)


def vertical_bases(kernel: np.ndarray, cov: np.ndarray) -> list[np.ndarray]:
    """Candidate vertical column spaces [(Cin, kh), full] (keep the first r columns): the weight SVD's, and the one whitened by the data.

    The data-aware one takes the top singular vectors of S M, S = Cv^(1/2), Cv = sum_j E[x_j x_j^T] (the
    patch covariance of the (c, i) coordinates, summed over horizontal taps), mapped back by S^-1: exact
    data-aware SVD when taps at different j are uncorrelated, an approximation otherwise, hence both tried.
    """
    cout, cin, kh, kw = kernel.shape
    m = kernel.transpose(1, 2, 0, 3).reshape(cin * kh, cout * kw)
    u_w = np.linalg.svd(m, full_matrices=False)[0]
    cv = np.einsum("ajbj->ab", cov.reshape(cin * kh, kw, cin * kh, kw))
    vals, vecs = np.linalg.eigh((cv + cv.T) / 2)
    keep = vals > max(vals.max(), 1e-30) * 1e-10
    s = (vecs[:, keep] * np.sqrt(vals[keep])) @ vecs[:, keep].T
    s_inv = (vecs[:, keep] / np.sqrt(vals[keep])) @ vecs[:, keep].T
    u_d = np.linalg.svd(s @ m, full_matrices=False)[0]
    return [u_w, np.linalg.qr(s_inv @ u_d)[0]]  # QR keeps the nested spans, conditions the refit


def data_aware_spatial(kernel: np.ndarray, stats: PatchStats, rank: int, bases: list | None = None):
    """(vertical [r, Cin, kh, 1], horizontal [Cout, r, 1, kw], bias shift [Cout], relative output error).

    Of the candidate vertical factors, the one whose least-squares horizontal factor gives the lower output
    error on the calibration patches; never worse than weight-only spatial SVD (a feasible choice of both).
    """
    cout, cin, kh, kw = kernel.shape
    best = None
    for u in bases if bases is not None else vertical_bases(kernel, stats.cov):
        u = u[:, :rank]
        h, err, total = _spatial_refit(kernel, stats.cov, u)
        if best is None or err < best[2]:
            best = (u, h, err, total)
    u, h, err, total = best
    r = u.shape[1]
    vertical = u.T.reshape(r, cin, kh, 1)
    horizontal = h.reshape(r, kw, cout).transpose(2, 0, 1)[:, :, None, :]
    w = kernel.reshape(cout, -1).T
    w_new = np.einsum("rcik,orkj->ocij", vertical, horizontal).reshape(cout, -1).T
    shift = stats.mean @ (w - w_new)
    return vertical, horizontal, shift, err / total


def data_aware_spatial_errors(kernel: np.ndarray, stats: PatchStats, round_to: int, extra=()) -> np.ndarray:
    """Relative output error at every rank 0..full; computed at multiples of round_to, full and `extra`, each
    other rank given the error of the next computed rank (what a rank rounded up to round_to would get)."""
    cout, cin, kh, kw = kernel.shape
    full = min(cin * kh, cout * kw)
    step = max(1, int(round_to))
    computed = sorted(set(range(step, full + 1, step)) | {full} | {int(r) for r in extra if r and 0 < int(r) <= full})
    errors = np.ones(full + 1)
    bases = vertical_bases(kernel, stats.cov)
    values = {r: data_aware_spatial(kernel, stats, r, bases)[3] for r in computed}
    nxt = full
    for r in range(full, 0, -1):
        if r in values:
            nxt = r
        errors[r] = values[nxt]
    return errors
