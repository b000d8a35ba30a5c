"""Who speaks when from two faces and one mixed track (`data.separation`), on hand-made series."""

import numpy as np

from infp.data.separation import score, split_tracks, who_speaks
from infp.face import topology as tp


def _face(gaps: np.ndarray) -> np.ndarray:
    """(T, 478, 3) landmarks whose lip gap over face height is `gaps` (T,); NaN where gaps is NaN."""
    lm = np.zeros((len(gaps), 478, 3))
    lm[:, tp.CHIN, 1] = 1.0
    lm[:, tp.LOWER_LIP_INNER, 1] = gaps
    lm[np.isnan(gaps)] = np.nan
    return lm


def _talking(n: int, on: np.ndarray, rng) -> np.ndarray:
    """A lip gap that moves (syllables) where `on`, rests (with a little noise) elsewhere."""
    return np.where(on, 0.05 + 0.04 * np.sin(np.arange(n) * 1.7), 0.01) + 0.002 * rng.standard_normal(n)


def test_the_moving_mouth_gets_the_speech_and_silence_goes_to_nobody() -> None:
    rng = np.random.default_rng(0)
    n = 200
    left_turn = np.arange(n) < 100
    speech = np.ones(n, bool)
    speech[90:110] = False  # a pause between the turns
    got = who_speaks(speech, _face(_talking(n, left_turn, rng)), _face(_talking(n, ~left_turn, rng)))
    truth = np.stack([left_turn & speech, ~left_turn & speech], 1)
    s = score(got, truth)
    assert s.frames == 180 and s.accuracy > 0.9 and s.floor_accuracy > 0.9
    assert not got[90:110].any()  # no speech: nobody speaks


def test_both_speak_when_both_mouths_move_and_a_missing_face_is_at_rest() -> None:
    rng = np.random.default_rng(1)
    n = 100
    moving = _talking(n, np.ones(n, bool), rng)
    got = who_speaks(np.ones(n, bool), _face(moving), _face(moving + 0.001 * rng.standard_normal(n)))
    assert got[10:-10].all(1).mean() > 0.8
    gone = np.full(n, np.nan)
    got = who_speaks(np.ones(n, bool), _face(moving), _face(gone))
    assert got[:, 0].all() and not got[:, 1].any()


def test_split_tracks_gives_each_their_stretches_of_the_mixed_track() -> None:
    mixed = np.ones(640 * 10, np.float32)
    speaks = np.zeros((10, 2), bool)
    speaks[:5, 0] = speaks[5:, 1] = True
    tracks = split_tracks(mixed, speaks)  # (person, [self, other], N)
    assert tracks.shape == (2, 2, 6400)
    left_self, left_other = tracks[0]
    assert left_self[:3000].min() == 1 and left_self[3400:].max() == 0  # 10-ms ramp around sample 3200
    np.testing.assert_array_equal(tracks[1, 0], left_other)
    np.testing.assert_array_equal(tracks[1, 1], left_self)


def test_score_on_known_cases() -> None:
    t = np.array([[1, 0], [1, 0], [0, 1], [1, 1], [0, 0]], bool)
    p = np.array([[1, 0], [1, 1], [1, 0], [1, 1], [1, 0]], bool)
    s = score(p, t)
    assert s.frames == 4 and s.accuracy == 0.5  # rows 0 and 3 exact
    assert s.floor_accuracy == 2 / 3  # single-speaker rows 0-2: 0 and 1 found the speaker, 2 did not
    assert s.recall == (1.0, 0.5) and s.precision == (0.6, 0.5)
