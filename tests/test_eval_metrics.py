"""bert_jax.evaluation against its oracles: scikit-learn and SciPy (GLUE metrics), seqeval 1.2.2
(NER), and the official SQuAD v1.1 / v2.0 evaluation scripts, whose scoring functions are
pasted below; plus a brute-force search for best_spans."""

import collections
import re
import statistics
import string
import warnings

import numpy as np
import pytest
import scipy.stats
import seqeval.metrics as seqeval
import sklearn.metrics as skm
from seqeval.metrics.sequence_labeling import get_entities as seqeval_get_entities

from bert_jax.errors import UserError
from bert_jax.evaluation import metrics, ner, squad


@pytest.fixture(autouse=True)
def _quiet_oracles():
    # sklearn / seqeval warn on zero division, SciPy on constant input, seqeval on non-NE tags.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


# ---------------------------------------------------------------------------------------------
# GLUE-style metrics vs scikit-learn / SciPy
# ---------------------------------------------------------------------------------------------


def _label_cases():
    rng = np.random.default_rng(0)
    cases = []
    for i in range(60):
        n = int(rng.integers(1, 40))
        k = 2 if i < 30 else int(rng.integers(3, 6))
        y = rng.integers(0, k, n)
        p = np.where(rng.random(n) < 0.6, y, rng.integers(0, k, n))  # mostly right
        cases.append((y, p))
    cases += [
        (np.array([1, 1, 1]), np.array([1, 1, 1])),  # one class only: MCC undefined
        (np.array([0, 0, 0]), np.array([0, 0, 0])),  # positive class absent: F1 undefined
        (np.array([0, 1, 0, 1]), np.array([1, 0, 1, 0])),  # all wrong: MCC -1
        (np.array([0, 0, 1]), np.array([0, 0, 0])),  # never predicts the positive class
    ]
    return cases


@pytest.mark.parametrize("case", range(len(_label_cases())))
def test_classification_metrics_match_sklearn(case):
    y, p = _label_cases()[case]
    assert metrics.accuracy(y, p) == skm.accuracy_score(y, p)
    assert metrics.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"), rel=1e-12, abs=1e-15)
    assert metrics.matthews_corrcoef(y, p) == pytest.approx(skm.matthews_corrcoef(y, p), rel=1e-12, abs=1e-15)
    for positive in (1, 2):  # labels=[positive] gives the binary F1 of that class on multiclass too
        if positive not in np.union1d(y, p) and len(np.union1d(y, p)) >= 2:
            continue
        want = skm.f1_score(y, p, labels=[positive], average=None, zero_division=0)[0]
        assert metrics.f1(y, p, positive=positive) == pytest.approx(want, rel=1e-12, abs=1e-15)
    if len(np.union1d(y, p)) <= 2 and 1 in np.union1d(y, p):
        assert metrics.f1(y, p) == pytest.approx(skm.f1_score(y, p), rel=1e-12, abs=1e-15)


def test_string_labels():
    y = ["cat", "dog", "dog", "bird", "cat", "dog"]
    p = ["cat", "dog", "cat", "bird", "bird", "dog"]
    assert metrics.accuracy(y, p) == skm.accuracy_score(y, p)
    assert metrics.macro_f1(y, p) == pytest.approx(skm.f1_score(y, p, average="macro"), rel=1e-12)
    assert metrics.matthews_corrcoef(y, p) == pytest.approx(skm.matthews_corrcoef(y, p), rel=1e-12)
    want = skm.f1_score(y, p, labels=["dog"], average=None)[0]
    assert metrics.f1(y, p, positive="dog") == pytest.approx(want, rel=1e-12)


def test_undefined_classification_scores_are_zero():
    assert metrics.matthews_corrcoef([1, 1, 1], [1, 1, 1]) == 0.0
    assert metrics.f1([0, 0], [0, 0]) == 0.0
    assert metrics.f1([0, 1], [0, 0]) == 0.0


def _regression_cases():
    rng = np.random.default_rng(1)
    cases = []
    for i in range(40):
        n = int(rng.integers(2, 50))
        x = rng.normal(size=n)
        y = 0.5 * x + rng.normal(size=n)
        if i % 2:  # integer grades in 0..5 like STS-B labels: many ties
            x, y = rng.integers(0, 6, n).astype(float), np.round(np.clip(y + 2.5, 0, 5))
        cases.append((x, y))
    cases += [
        (np.array([1.0, 2.0]), np.array([3.0, 1.0])),
        (np.array([1e9, 1e9 + 1, 1e9 + 3]), np.array([2.0, 1.0, 7.0])),  # large offset
        (np.array([1, 2, 2, 2, 3]), np.array([5, 4, 4, 1, 1])),
    ]
    return cases


@pytest.mark.parametrize("case", range(len(_regression_cases())))
def test_correlations_match_scipy(case):
    x, y = _regression_cases()[case]
    want_p, want_s = scipy.stats.pearsonr(x, y).statistic, scipy.stats.spearmanr(x, y).statistic
    if np.isnan(want_s):  # rounding can leave a constant vector
        assert np.isnan(metrics.spearman(x, y))
    else:
        assert metrics.spearman(x, y) == pytest.approx(want_s, abs=1e-12)
    if np.isnan(want_p):
        assert np.isnan(metrics.pearson(x, y))
    else:
        assert metrics.pearson(x, y) == pytest.approx(want_p, abs=1e-12)


def test_constant_input_gives_nan_like_scipy():
    for x, y in (([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), ([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])):
        assert np.isnan(scipy.stats.pearsonr(x, y).statistic) and np.isnan(metrics.pearson(x, y))
        assert np.isnan(scipy.stats.spearmanr(x, y).statistic) and np.isnan(metrics.spearman(x, y))


def test_score_by_name():
    y, p = [0, 1, 1, 0, 1], [0, 1, 0, 0, 1]
    got = metrics.score(["accuracy", "f1", "mcc"], y, p)
    assert list(got) == ["accuracy", "f1", "mcc"]
    assert got["accuracy"] == 0.8
    assert got["f1"] == pytest.approx(skm.f1_score(y, p))
    assert got["mcc"] == pytest.approx(skm.matthews_corrcoef(y, p))
    assert metrics.score("pearson", [1, 2, 3], [1, 2, 4]) == {"pearson": pytest.approx(0.98198050606)}
    assert set(metrics.METRICS) == {"accuracy", "f1", "macro_f1", "mcc", "pearson", "spearman"}


def test_metric_errors_name_the_problem():
    with pytest.raises(UserError, match=r"unknown metric 'f2'; choose from: accuracy, f1, macro_f1, mcc"):
        metrics.score(["accuracy", "f2"], [1], [1])
    with pytest.raises(UserError, match="same length; got 3 and 2"):
        metrics.score(["accuracy"], [1, 0, 1], [1, 0])
    with pytest.raises(UserError, match="same length; got 2 and 1"):
        metrics.matthews_corrcoef([1, 0], [1])
    with pytest.raises(UserError, match="empty"):
        metrics.score(["accuracy"], [], [])
    with pytest.raises(UserError, match="empty"):
        metrics.accuracy([], [])
    with pytest.raises(UserError, match="at least 2 points; got 1"):
        metrics.pearson([1.0], [2.0])
    with pytest.raises(UserError, match="1-D"):
        metrics.accuracy([[1, 0]], [[1, 0]])
    with pytest.raises(UserError, match=r"positive=1 is not among the labels seen \('neg', 'pos'\)"):
        metrics.f1(["pos", "neg"], ["pos", "pos"])
    assert metrics.f1([0, 0], [0, 0], positive=1) == 0.0  # one class seen: allowed, as in sklearn


def test_summarize_over_seeds():
    runs = [
        {"accuracy": 0.81, "f1": 0.70},
        {"accuracy": 0.84, "f1": 0.75, "mcc": 0.5},
        {"accuracy": 0.79},
        {"accuracy": 0.90, "f1": 0.71},
    ]
    got = metrics.summarize(runs)
    assert list(got) == ["accuracy", "f1", "mcc"]
    for name, n in (("accuracy", 4), ("f1", 3), ("mcc", 1)):
        v = [r[name] for r in runs if name in r]
        assert got[name]["n"] == n
        assert got[name]["mean"] == pytest.approx(np.mean(v), rel=1e-15)
        assert got[name]["median"] == pytest.approx(statistics.median(v), rel=1e-15)
        assert got[name]["min"] == min(v) and got[name]["max"] == max(v)
        want_std = statistics.stdev(v) if n > 1 else 0.0
        assert got[name]["std"] == pytest.approx(want_std, rel=1e-12)
    assert got["mcc"]["std"] == 0.0
    with pytest.raises(UserError, match="at least one run"):
        metrics.summarize([])


# ---------------------------------------------------------------------------------------------
# NER vs seqeval 1.2.2
# ---------------------------------------------------------------------------------------------

_TYPES = ("PER", "LOC", "MISC")


def _random_sentence(rng, n: int, scheme: str) -> list[str]:
    """A tag sequence in one scheme, with a fraction of the tags replaced by arbitrary ones
    so malformed sequences (I-X after B-Y, E without B, ...) are covered."""
    out = []
    while len(out) < n:
        if rng.random() < 0.4:
            out.append("O")
            continue
        t = _TYPES[int(rng.integers(len(_TYPES)))]
        length = int(rng.integers(1, 4))
        if scheme == "iob2":
            out += [f"B-{t}"] + [f"I-{t}"] * (length - 1)
        elif scheme == "iob1":
            out += [f"I-{t}"] * length
        elif scheme == "ioe":
            out += [f"I-{t}"] * (length - 1) + [f"E-{t}"]
        else:  # iobes
            out += [f"S-{t}"] if length == 1 else [f"B-{t}"] + [f"I-{t}"] * (length - 2) + [f"E-{t}"]
    out = out[:n]
    odd = ["O", "B", "I", "E-PER", "S-LOC", "I-MISC", "B-PER", "B-PER-X", "X-PER", "."]
    for i in range(n):
        if rng.random() < 0.15:
            out[i] = odd[int(rng.integers(len(odd)))]
    return out


def _corrupt(rng, tags: list[str]) -> list[str]:
    """A prediction: the truth with some tags swapped for others from the same pool."""
    pool = ["O", "B-PER", "I-PER", "E-PER", "S-PER", "B-LOC", "I-LOC", "E-LOC", "S-LOC", "B-MISC", "I-MISC"]
    return [pool[int(rng.integers(len(pool)))] if rng.random() < 0.25 else t for t in tags]


def _ner_cases():
    rng = np.random.default_rng(2)
    schemes = ("iob1", "iob2", "ioe", "iobes")
    cases = []
    for _ in range(150):
        true, pred = [], []
        for _ in range(int(rng.integers(1, 6))):
            n = int(rng.integers(0, 12))
            sentence = _random_sentence(rng, n, schemes[int(rng.integers(len(schemes)))])
            true.append(sentence)
            pred.append(_corrupt(rng, sentence))
        cases.append((true, pred))
    return cases


def test_get_entities_matches_seqeval():
    rng = np.random.default_rng(3)
    for case, (true, pred) in enumerate(_ner_cases()):
        for sentence in true + pred:
            assert ner.get_entities(sentence) == seqeval_get_entities(sentence), (case, sentence)
    for _ in range(300):  # arbitrary sequences over a wide tag pool
        pool = ["O", "B-A", "I-A", "E-A", "S-A", "B-B", "I-B", "E-B", "S-B", "B", "I", "E", "S", "X-A", "."]
        seq = [pool[i] for i in rng.integers(0, len(pool), int(rng.integers(0, 15)))]
        assert ner.get_entities(seq) == seqeval_get_entities(seq), seq


def test_get_entities_hand_cases():
    assert ner.get_entities(["B-PER", "I-PER", "O", "B-LOC"]) == [("PER", 0, 1), ("LOC", 3, 3)]
    assert ner.get_entities(["I-PER", "I-PER", "I-LOC"]) == [("PER", 0, 1), ("LOC", 2, 2)]  # IOB1
    assert ner.get_entities(["B-PER", "I-LOC"]) == [("PER", 0, 0), ("LOC", 1, 1)]  # type change
    assert ner.get_entities(["S-PER", "B-LOC", "E-LOC"]) == [("PER", 0, 0), ("LOC", 1, 2)]
    assert ner.get_entities([]) == []
    assert ner.get_entities(["O", "O"]) == []


def _seqeval_scores(true, pred):
    want = {
        "precision": seqeval.precision_score(true, pred),
        "recall": seqeval.recall_score(true, pred),
        "f1": seqeval.f1_score(true, pred),
        "accuracy": seqeval.accuracy_score(true, pred),
    }
    if seqeval_get_entities(true) or seqeval_get_entities(pred):
        report = seqeval.classification_report(true, pred, output_dict=True)
        for name, row in report.items():
            if not name.endswith(" avg"):
                want[f"f1_{name}"] = row["f1-score"]
    return want


def test_entity_scores_match_seqeval():
    for case, (true, pred) in enumerate(_ner_cases()):
        if not any(true):
            continue
        got = ner.entity_scores(true, pred)
        want = _seqeval_scores(true, pred)
        assert got == pytest.approx(want, rel=0, abs=0), case  # same figures, bit for bit
        assert list(got) == list(want)


def test_entity_scores_hand_cases():
    true = [["O", "O", "B-MISC", "I-MISC", "B-MISC", "O", "O"], ["B-PER", "I-PER", "O"]]
    pred = [["O", "O", "B-MISC", "I-MISC", "B-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    got = ner.entity_scores(true, pred)
    assert got["f1"] == pytest.approx(2 / 3) and got["f1_MISC"] == 0.5 and got["f1_PER"] == 1.0
    # A chunk at the end of one sentence does not run into the next one's I- tags.
    got = ner.entity_scores([["B-PER"], ["I-PER"]], [["B-PER"], ["I-PER"]])
    assert got["precision"] == got["recall"] == 1.0
    assert ner.entity_scores([["B-PER", "I-PER"]], [["B-PER", "I-PER"]])["f1"] == 1.0
    nothing = ner.entity_scores([["O", "O"]], [["O", "O"]])  # no entities anywhere: 0.0, not an error
    assert nothing == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "accuracy": 1.0}


def test_entity_scores_errors():
    with pytest.raises(UserError, match="sentence 1 has 2 true tags but 1 predicted tags"):
        ner.entity_scores([["O"], ["O", "B-PER"]], [["O"], ["O"]])
    with pytest.raises(UserError, match="same number of sentences; got 2 and 1"):
        ner.entity_scores([["O"], ["O"]], [["O"]])
    with pytest.raises(UserError, match="no tags"):
        ner.entity_scores([[]], [[]])
    with pytest.raises(UserError, match="sentence 0 is a string"):
        ner.entity_scores(["B-PER"], ["B-PER"])
    with pytest.raises(UserError, match="tag 1 is ''"):
        ner.get_entities(["O", ""])


# ---------------------------------------------------------------------------------------------
# SQuAD vs the official evaluation scripts
# ---------------------------------------------------------------------------------------------
# The oracle: the scoring functions of the official evaluate-v2.0.py (SQuAD 2.0) and
# evaluate-v1.1.py (SQuAD 1.1), pasted with their logic unchanged (argparse / file / plotting
# code left out; v1.1's names prefixed v1_).


def normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
        return re.sub(regex, " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def get_tokens(s):
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold, a_pred):
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold, a_pred):
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # If either is no-answer, then F1 is 1 if they agree, 0 otherwise
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def make_qid_to_has_ans(dataset):
    qid_to_has_ans = {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid_to_has_ans[qa["id"]] = bool(qa["answers"])
    return qid_to_has_ans


def get_raw_scores(dataset, preds):
    exact_scores = {}
    f1_scores = {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid = qa["id"]
                gold_answers = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
                if not gold_answers:
                    # For unanswerable questions, only correct answer is empty string
                    gold_answers = [""]
                if qid not in preds:
                    print("Missing prediction for %s" % qid)  # noqa: UP031
                    continue
                a_pred = preds[qid]
                # Take max over all gold answers
                exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
                f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def apply_no_ans_threshold(scores, na_probs, qid_to_has_ans, na_prob_thresh):
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        if pred_na:
            new_scores[qid] = float(not qid_to_has_ans[qid])
        else:
            new_scores[qid] = s
    return new_scores


def make_eval_dict(exact_scores, f1_scores, qid_list=None):
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores.values()) / total),
                ("f1", 100.0 * sum(f1_scores.values()) / total),
                ("total", total),
            ]
        )
    else:
        total = len(qid_list)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
                ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total),
                ("total", total),
            ]
        )


def merge_eval(main_eval, new_eval, prefix):
    for k in new_eval:
        main_eval["%s_%s" % (prefix, k)] = new_eval[k]  # noqa: UP031


def find_best_thresh(preds, scores, na_probs, qid_to_has_ans):
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for _i, qid in enumerate(qid_list):
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            if preds[qid]:
                diff = -1
            else:
                diff = 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(main_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans):
    best_exact, exact_thresh = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


def official_v2(dataset, preds, na_probs=None, na_prob_thresh=1.0):
    """evaluate-v2.0.py's main() without the files."""
    na_prob_file = na_probs is not None
    if not na_prob_file:
        na_probs = {k: 0.0 for k in preds}
    qid_to_has_ans = make_qid_to_has_ans(dataset)  # maps qid to True/False
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = get_raw_scores(dataset, preds)
    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        has_ans_eval = make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids)
        merge_eval(out_eval, has_ans_eval, "HasAns")
    if no_ans_qids:
        no_ans_eval = make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids)
        merge_eval(out_eval, no_ans_eval, "NoAns")
    if na_prob_file:
        find_all_best_thresh(out_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans)
    return dict(out_eval)


def v1_normalize_answer(s):
    """Lower text and remove punctuation, articles and extra whitespace."""

    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def v1_f1_score(prediction, ground_truth):
    prediction_tokens = v1_normalize_answer(prediction).split()
    ground_truth_tokens = v1_normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    f1 = (2 * precision * recall) / (precision + recall)
    return f1


def v1_exact_match_score(prediction, ground_truth):
    return v1_normalize_answer(prediction) == v1_normalize_answer(ground_truth)


def v1_metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
    scores_for_ground_truths = []
    for ground_truth in ground_truths:
        score = metric_fn(prediction, ground_truth)
        scores_for_ground_truths.append(score)
    return max(scores_for_ground_truths)


def v1_evaluate(dataset, predictions):
    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue  # the script prints 'Unanswered question ... will receive score 0.'
                ground_truths = list(map(lambda x: x["text"], qa["answers"]))
                prediction = predictions[qa["id"]]
                exact_match += v1_metric_max_over_ground_truths(
                    v1_exact_match_score, prediction, ground_truths
                )
                f1 += v1_metric_max_over_ground_truths(v1_f1_score, prediction, ground_truths)

    exact_match = 100.0 * exact_match / total
    f1 = 100.0 * f1 / total

    return {"exact_match": exact_match, "f1": f1}


# -- end of the official scripts ---------------------------------------------------------------

_WORDS = [
    "Paris",
    "the",
    "The",
    "a",
    "An",
    "river",
    "Seine",
    "1889",
    "Eiffel",
    "tower",
    "café",
    "Ünïcödé",
    "naïve",
    "東京",
    "ΑΘΗΝΑ",
    "x",
    "an",
    "and",
    "theory",
    "über",
    "Ａ",
    "Ⅻ",
]
_PUNCT = ["", "", "", ".", ",", "!", "?", "'", '"', "-", "(", ")", "«", "»", "—", "…", "$", "%"]


def _random_text(rng, lo=1, hi=5) -> str:
    words = [
        _WORDS[int(rng.integers(len(_WORDS)))] + _PUNCT[int(rng.integers(len(_PUNCT)))]
        for _ in range(int(rng.integers(lo, hi)))
    ]
    sep = [" ", " ", "  ", "\t", "\n"][int(rng.integers(5))]
    return sep.join(words)


def _variant(rng, text: str) -> str:
    """A prediction near a gold answer: re-cased, punctuated, with an article or word more or less."""
    r = rng.random()
    if r < 0.2:
        return text
    if r < 0.35:
        return text.upper()
    if r < 0.5:
        return "The " + text + "."
    if r < 0.65:
        return " ".join(text.split()[1:])
    if r < 0.8:
        return text + " " + _random_text(rng, 1, 3)
    return _random_text(rng)


def _squad_case(seed: int, unanswerable: float = 0.3, missing: float = 0.0):
    """(gold, predictions, na_probs) of ~60 questions."""
    rng = np.random.default_rng(seed)
    gold, preds, na_probs = {}, {}, {}
    for i in range(int(rng.integers(1, 60))):
        qid = f"q{seed}_{i}"
        if rng.random() < unanswerable:
            answers = []
        else:
            answers = [_random_text(rng) for _ in range(int(rng.integers(1, 4)))]
            if rng.random() < 0.1:
                answers.append(["the", ".", "  ", "A an"][int(rng.integers(4))])  # normalizes to nothing
        gold[qid] = answers
        if rng.random() < missing:
            continue
        if rng.random() < 0.2:
            preds[qid] = ["", "the", "..."][int(rng.integers(3))]
        elif answers:
            preds[qid] = _variant(rng, answers[int(rng.integers(len(answers)))])
        else:
            preds[qid] = _random_text(rng)
        # On a coarse grid, so thresholds tie as real na_probs sometimes do.
        na_probs[qid] = float(np.round(rng.random(), 1)) if rng.random() < 0.5 else float(rng.random())
    return gold, preds, na_probs


def _dataset(gold):
    """The gold dict in SQuAD's JSON shape, for the official scripts."""
    qas = [
        {"id": qid, "answers": [{"text": t, "answer_start": 0} for t in answers]}
        for qid, answers in gold.items()
    ]
    return [{"title": "t", "paragraphs": [{"context": "", "qas": qas}]}]


def test_normalize_and_per_answer_scores_match_official():
    rng = np.random.default_rng(5)
    texts = [
        "",
        " ",
        "the",
        "A",
        "a an the",
        "An apple.",
        "THE  Eiffel\tTower!",
        "l'an",
        "café, naïve",
        "Ａ theory",
        "«the» river",
        "$1,889.00",
        "ΑΘΗΝΑ the",
    ] + [_random_text(rng) for _ in range(150)]
    for s in texts:
        assert squad.normalize_answer(s) == normalize_answer(s) == v1_normalize_answer(s), s
    for _ in range(1500):
        g, p = texts[int(rng.integers(len(texts)))], texts[int(rng.integers(len(texts)))]
        assert squad.exact_match(g, p) == compute_exact(g, p)
        assert squad.f1(g, p) == compute_f1(g, p)


@pytest.mark.parametrize("seed", range(12))
def test_evaluate_matches_official_v2(seed):
    gold, preds, na_probs = _squad_case(seed)
    dataset = _dataset(gold)
    got = squad.evaluate(gold, preds)
    assert got.pop("missing") == 0
    assert got == official_v2(dataset, preds)
    for thresh in (1.0, 0.5, 0.3, 0.0):
        got = squad.evaluate(gold, preds, na_probs, thresh)
        assert got.pop("missing") == 0
        want = official_v2(dataset, preds, na_probs, thresh)
        assert got == want  # every figure, bit for bit, and the same keys
        assert list(got) == list(want)


def test_all_unanswerable_and_all_answerable_keys():
    gold = {"a": [], "b": []}
    got = squad.evaluate(gold, {"a": "", "b": "x"}, {"a": 0.2, "b": 0.9}, 0.5)
    assert "HasAns_exact" not in got and got["NoAns_total"] == 2
    assert got["exact"] == 100.0  # b's na_prob 0.9 > 0.5 turns "x" into ""
    assert got == official_v2(_dataset(gold), {"a": "", "b": "x"}, {"a": 0.2, "b": 0.9}, 0.5) | {"missing": 0}
    got = squad.evaluate({"a": ["Paris"]}, {"a": "paris"})
    assert got == {
        "exact": 100.0,
        "f1": 100.0,
        "total": 1,
        "missing": 0,
        "HasAns_exact": 100.0,
        "HasAns_f1": 100.0,
        "HasAns_total": 1,
    }


@pytest.mark.parametrize("seed", range(8))
def test_answerable_evaluate_matches_official_v1(seed):
    gold, preds, _ = _squad_case(100 + seed, unanswerable=0.0, missing=0.15)
    # v1.1 and v2.0 part ways on gold answers that normalize to nothing (v2.0 drops them).
    gold = {q: [a for a in answers if normalize_answer(a)] for q, answers in gold.items()}
    gold = {q: answers for q, answers in gold.items() if answers}
    preds = {q: p for q, p in preds.items() if q in gold}
    got = squad.evaluate(gold, preds)
    want = v1_evaluate(_dataset(gold), preds)
    assert got["exact"] == pytest.approx(want["exact_match"], rel=1e-13)
    assert got["f1"] == pytest.approx(want["f1"], rel=1e-13)
    assert got["total"] == len(gold) and got["missing"] == len(gold) - len(preds)


def test_missing_predictions_score_zero():
    gold = {"a": ["Paris"], "b": ["Seine"], "c": []}
    got = squad.evaluate(gold, {"a": "Paris"}, {"a": 0.1})
    assert got["missing"] == 2 and got["total"] == 3
    assert got["exact"] == pytest.approx(100 / 3) and got["NoAns_exact"] == 0.0
    assert got["best_exact"] == pytest.approx(100 / 3)  # only the answered question can score


def test_apply_threshold():
    preds = {"a": "Paris", "b": "Seine", "c": ""}
    got = squad.apply_threshold(preds, {"a": 0.2, "b": 0.7, "c": 0.9}, 0.5)
    assert got == {"a": "Paris", "b": "", "c": ""}
    assert squad.apply_threshold(preds, {"a": 0.5, "b": 0.5, "c": 0.5}, 0.5) == preds  # strictly greater


def test_squad_errors_name_the_id():
    with pytest.raises(UserError, match="question id 'zz', which is not in gold"):
        squad.evaluate({"a": ["x"]}, {"a": "x", "zz": "y"})
    with pytest.raises(UserError, match="na_probs has no entry for question id 'b'"):
        squad.evaluate({"a": ["x"], "b": []}, {"a": "x", "b": ""}, {"a": 0.3})
    with pytest.raises(UserError, match="no entry for question id 'a'"):
        squad.apply_threshold({"a": "x"}, {}, 0.5)
    with pytest.raises(UserError, match=r"gold\['a'\] is 'Paris'; expected a list of answer texts"):
        squad.evaluate({"a": "Paris"}, {"a": "Paris"})
    with pytest.raises(UserError, match=r"predictions\['a'\] is None"):
        squad.evaluate({"a": ["Paris"]}, {"a": None})
    with pytest.raises(UserError, match="no questions"):
        squad.evaluate({}, {})


# ---------------------------------------------------------------------------------------------
# best_spans
# ---------------------------------------------------------------------------------------------


def _brute_force(start, end, allowed, n_best, max_len, start_allowed):
    spans = [
        (i, j, float(start[i]) + float(end[j]))
        for i in range(len(start))
        for j in range(i, min(len(start), i + max_len))
        if allowed[i] and allowed[j] and (start_allowed is None or start_allowed[i])
    ]
    return sorted(spans, key=lambda s: (-s[2], s[0], s[1]))[:n_best]


def _run_squad(start, end, allowed, n_best, max_len, start_allowed):
    """The candidate loop of BERT's run_squad.py write_predictions, over one feature."""

    def _get_best_indexes(logits, n_best_size):
        index_and_score = sorted(enumerate(logits), key=lambda x: x[1], reverse=True)
        return [index_and_score[i][0] for i in range(min(n_best_size, len(index_and_score)))]

    prelim = []
    for start_index in _get_best_indexes(start, n_best):
        for end_index in _get_best_indexes(end, n_best):
            if not allowed[start_index] or not allowed[end_index]:  # token_to_orig_map
                continue
            if start_allowed is not None and not start_allowed[start_index]:  # token_is_max_context
                continue
            if end_index < start_index:
                continue
            if end_index - start_index + 1 > max_len:
                continue
            prelim.append((start_index, end_index, float(start[start_index]) + float(end[end_index])))
    return sorted(prelim, key=lambda x: x[2], reverse=True)[:n_best]


def test_best_spans_matches_brute_force():
    rng = np.random.default_rng(6)
    for trial in range(300):
        s = int(rng.integers(1, 40))
        start, end = rng.normal(size=s), rng.normal(size=s)
        if trial % 3 == 0:  # ties
            start, end = np.round(start, 0), np.round(end, 0)
        start, end = start.astype(np.float32), end.astype(np.float32)
        allowed = rng.random(s) < 0.7
        start_allowed = (rng.random(s) < 0.8) if trial % 2 else None
        max_len = int(rng.integers(1, 12))
        n_best = s + int(rng.integers(0, 3))
        got = squad.best_spans(start, end, allowed, n_best, max_len, start_allowed)
        assert got == _brute_force(start, end, allowed, n_best, max_len, start_allowed), trial


def test_best_spans_matches_run_squad_loop():
    rng = np.random.default_rng(7)
    for trial in range(200):
        s = int(rng.integers(20, 80))
        start, end = rng.normal(size=s).astype(np.float32), rng.normal(size=s).astype(np.float32)
        allowed = np.arange(s) >= int(rng.integers(1, 10))  # question tokens first, as in BERT's input
        allowed[-1] = False  # the final [SEP]
        start_allowed = (rng.random(s) < 0.8) if trial % 2 else None
        n_best, max_len = int(rng.integers(1, 25)), int(rng.integers(1, 31))
        got = squad.best_spans(start, end, allowed, n_best, max_len, start_allowed)
        assert got == _run_squad(start, end, allowed, n_best, max_len, start_allowed), trial


def test_best_spans_restrictions():
    start = np.array([0.0, 5.0, 2.0, 0.0, 0.0])
    end = np.array([0.0, 0.0, 0.0, 4.0, 3.0])
    allowed = np.ones(5, bool)
    assert squad.best_spans(start, end, allowed)[0] == (1, 3, 9.0)
    assert squad.best_spans(start, end, allowed, max_answer_length=2)[0] == (2, 3, 6.0)
    assert squad.best_spans(start, end, allowed, max_answer_length=1)[0] == (1, 1, 5.0)
    assert squad.best_spans(start, end, allowed, n_best_size=1) == [(1, 3, 9.0)]
    no_3 = allowed.copy()
    no_3[3] = False
    assert squad.best_spans(start, end, no_3)[0] == (1, 4, 8.0)
    assert squad.best_spans(start, end, allowed, start_allowed=np.arange(5) != 1)[0] == (2, 3, 6.0)
    assert squad.best_spans(start, end, np.zeros(5, bool)) == []
    # Only the top-n starts and ends are searched: with n_best_size=1 start 1 / end 3 only.
    assert squad.best_spans(start, end, allowed, n_best_size=1, max_answer_length=2) == []
    # Equal scores: lower start, then lower end, first.
    tied = squad.best_spans(np.zeros(3), np.zeros(3), np.ones(3, bool), 3)
    assert tied == [(0, 0, 0.0), (0, 1, 0.0), (0, 2, 0.0)]


def test_best_spans_errors():
    ok = np.ones(4, bool)
    with pytest.raises(UserError, match=r"end_logits must have shape \(4,\)"):
        squad.best_spans(np.zeros(4), np.zeros(3), ok)
    with pytest.raises(UserError, match=r"allowed must have shape \(4,\)"):
        squad.best_spans(np.zeros(4), np.zeros(4), ok[:2])
    with pytest.raises(UserError, match="allowed must be a bool array"):
        squad.best_spans(np.zeros(4), np.zeros(4), np.ones(4))
    with pytest.raises(UserError, match="start_allowed must be a bool array"):
        squad.best_spans(np.zeros(4), np.zeros(4), ok, start_allowed=ok[:3])
    with pytest.raises(UserError, match="1-D"):
        squad.best_spans(np.zeros((2, 4)), np.zeros((2, 4)), ok)
    with pytest.raises(UserError, match="n_best_size must be a positive integer; got 0"):
        squad.best_spans(np.zeros(4), np.zeros(4), ok, n_best_size=0)
    with pytest.raises(UserError, match="max_answer_length must be a positive integer; got 2.5"):
        squad.best_spans(np.zeros(4), np.zeros(4), ok, max_answer_length=2.5)
    with pytest.raises(UserError, match="NaN"):
        squad.best_spans(np.array([0, np.nan, 0, 0]), np.zeros(4), ok)
