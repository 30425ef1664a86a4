"""The ignition probes: held-out atomic items, trace answers, and the probes on a real tiny model."""

import pytest
import torch

from catalyst_ttt.metrics.probes import (
    TRACE_KINDS,
    catalyst_probes,
    format_rate,
    leading_answer,
    probe_traces,
    skill_accuracy,
    trace_dependence,
)
from catalyst_ttt.schema import ProbesConfig
from catalyst_ttt.tasks.alchemy import OPS, Alchemy, AlchemyConfig, apply_op, format_step
from catalyst_ttt.tasks.arith import Arith, ArithConfig
from catalyst_ttt.tasks.base import AtomicProbe
from helpers.cells import SPLITS, TASK

SMALL_ARITH = dict(n_train=40, n_reader=8, n_id=8, n_heldout=8, n_shift=4)


def test_alchemy_atomic_probes_are_held_out_of_every_split_and_the_base_corpus():
    task = Alchemy(AlchemyConfig(n_base_single=3000, n_base_chain=3000, n_base_answer_only=2000))
    probes = task.atomic_probes(300)
    assert len(probes) == 300 and len({p.prompt for p in probes}) == 300
    texts = task.base_corpus() + [
        p.prompt + task.render(p.steps, p.answer) for split in task.splits().values() for p in split
    ]
    for probe in probes:
        op, start = probe.prompt.rstrip(">").split(" ")
        assert op in OPS and len(start) == task.cfg.length and probe.answer == apply_op(op, start, 10)
        assert not any(probe.prompt in text for text in texts), probe  # never stated as a step
        assert not any(text.startswith((f"{start} {op}:", f"{start} {op},")) for text in texts), probe
    assert task.atomic_probes(300) == probes  # seeded: every cell probes the same items


def test_atomic_probes_stop_at_what_the_space_leaves():
    """alphabet 3, length 2, two ops: 18 (op, input) pairs; the splits and the base corpus take some."""
    task = Alchemy(
        AlchemyConfig(
            alphabet_size=3,
            length=2,
            ops=["inc", "rev"],
            max_ops=2,
            heldout_composition_frac=0.0,
            answer_only_frac=0.0,
            n_train=4,
            n_reader=0,
            n_id=2,
            n_heldout=0,
            n_shift=0,
            n_base_single=3,
            n_base_chain=0,
            n_base_answer_only=0,
        )
    )
    taken = {
        (step.split(" ")[0], step.split(" ")[1].split(">")[0])
        for text in task.base_corpus() + [";".join(p.steps) for s in task.splits().values() for p in s]
        for step in text.split(";")
    }
    probes = task.atomic_probes(100)
    assert len(probes) == 2 * 9 - len(taken)
    assert not {(p.prompt.split(" ")[0], p.prompt.split(" ")[1][:-1]) for p in probes} & taken


def test_arith_atomic_probes_are_the_facts_no_text_states():
    default = Arith(ArithConfig(**SMALL_ARITH))
    stated = {step for text in default.base_corpus() for step in text.split(";") if "=" in step}
    assert len(stated) == 200 and default.atomic_probes(50) == []  # the default corpus states every fact
    sparse = Arith(ArithConfig(**SMALL_ARITH, n_base_facts=20, n_base_chain=5, n_base_answer_only=0))
    texts = sparse.base_corpus() + [";".join(p.steps) for s in sparse.splits().values() for p in s]
    probes = sparse.atomic_probes(500)
    stated = {step for text in texts for step in text.split(";") if "=" in step}
    assert 0 < len(probes) == 200 - len(stated)
    for probe in probes:
        x, y, carry = (int(v) for v in probe.prompt.rstrip("=").split("+"))
        assert probe.answer == str(x + y + carry) and carry in (0, 1)
        assert not any(probe.prompt + probe.answer in text.split(";") for text in texts)


def test_trace_answers_by_hand():
    arith = Arith(ArithConfig(**SMALL_ARITH))
    gold = arith.make_problem(347, 485)  # 7+5+0=12;4+8+1=13;3+4+1=8
    assert arith.trace_answer(gold.steps) == "832" == gold.answer
    assert arith.trace_answer(("9+9+0=18", "9+9+1=19")) == "198"
    assert arith.trace_answer(("7+5+0=13", "4+8+1=15", "3+4+1=9")) == "953"  # what false sums lead to
    assert arith.trace_answer(()) is None and arith.trace_answer(("garbage",)) is None
    assert TASK.trace_answer(("rot AB>FG", "rev FG>GF")) == "GF"
    assert TASK.trace_answer(()) is None and TASK.trace_answer(("nonsense",)) is None


def test_leading_answer():
    assert leading_answer(TASK, "FGHI;rot") == "FGHI"
    assert leading_answer(TASK, ";FGHI") is None
    assert leading_answer(Arith(ArithConfig(**SMALL_ARITH)), "12#3") == "12"


def test_probe_traces_are_gold_a_donors_and_corrupted():
    problems = SPLITS["id"]
    gold, donor, corrupted = (probe_traces(TASK, problems, kind) for kind in TRACE_KINDS)
    assert gold == [p.steps for p in problems]
    assert all(d != p.steps and d in {q.steps for q in problems} for d, p in zip(donor, problems))
    assert all(len(c) == p.num_steps and c != p.steps for c, p in zip(corrupted, problems))


def _greedy_one(model, tokenizer, context: str, budget: int) -> str:
    """One prompt at a time, without padding: the batched probes recomputed independently."""
    ids = tokenizer(context, return_tensors="pt", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=budget,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_trace_dependence_recomputed_item_by_item(taught):
    model, tokenizer = taught
    problems = SPLITS["id"] + SPLITS["heldout"]
    shares = trace_dependence(TASK, problems, model, tokenizer, batch_size=5)
    assert set(shares) == {f"trace/{k}/{s}" for k in TRACE_KINDS for s in ("gold_answer", "follows_trace")}
    for kind in TRACE_KINDS:
        follows, gold, kept = 0, 0, 0
        for problem, trace in zip(problems, probe_traces(TASK, problems, kind)):
            led_to = TASK.trace_answer(trace)
            if kind != "gold" and led_to == problem.answer:
                continue
            kept += 1
            budget = max(len(problem.answer), len(led_to)) + 1
            written = _greedy_one(model, tokenizer, problem.prompt + TASK.render(trace, ""), budget)
            answer = TASK.parse(TASK.render(trace, "") + written).answer
            follows, gold = follows + (answer == led_to), gold + (answer == problem.answer)
        assert shares[f"trace/{kind}/follows_trace"] == pytest.approx(follows / kept), kind
        assert shares[f"trace/{kind}/gold_answer"] == pytest.approx(gold / kept), kind
    assert shares["trace/gold/follows_trace"] == shares["trace/gold/gold_answer"]  # a gold trace leads to gold


def test_format_rate_and_skill_recomputed_item_by_item(taught):
    model, tokenizer = taught
    problems = SPLITS["id"] + SPLITS["heldout"]
    written = [_greedy_one(model, tokenizer, p.prompt, TASK.max_completion_chars) for p in problems]
    parsed = [TASK.parse(w) for w in written]
    expected = sum(q.answer is not None and len(q.steps) == len(p.spec["ops"]) for p, q in zip(problems, parsed))
    assert format_rate(TASK, problems, model, tokenizer, batch_size=3) == pytest.approx(expected / len(problems))
    assert expected > 0  # the taught model writes the format: the check can tell a rate from zero
    # held-out probes (the taught model never saw an op without its prompt) and, so that some hit, each
    # problem's first op asked after its own prompt, as the taught model writes it
    in_context = [
        AtomicProbe(p.prompt + format_step(p.spec["ops"][0], p.spec["start"], ""), p.steps[0][-2:]) for p in problems
    ]
    probes = TASK.atomic_probes(12) + in_context
    hits = 0
    for probe in probes:
        text = _greedy_one(model, tokenizer, probe.prompt, len(probe.answer) + 1)
        letters = text[: len(probe.answer) + 1]
        hits += letters[: len(probe.answer)] == probe.answer and not (
            len(letters) > len(probe.answer) and TASK.is_answer(letters)
        )
    assert skill_accuracy(TASK, probes, model, tokenizer, batch_size=7) == pytest.approx(hits / len(probes))
    assert hits > 0


def test_probes_can_be_turned_off_and_otherwise_probe_the_id_items(taught):
    model, tokenizer = taught
    problems = SPLITS["id"][:5]
    loads = []

    def base_model():  # the start is its own base here (regime none)
        loads.append(1)
        return model

    assert catalyst_probes(ProbesConfig(enabled=False), TASK, problems, model, tokenizer, 8, base_model) == {}
    assert not loads  # turned off: no base is loaded
    probes = catalyst_probes(ProbesConfig(), TASK, problems, model, tokenizer, 8, base_model)
    assert probes["format/start"] == pytest.approx(format_rate(TASK, problems, model, tokenizer, 8))
    assert probes["skill/base"] == probes["skill/start"]
    assert len(loads) == 1  # loaded once, however many probes read the base
