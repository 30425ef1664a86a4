"""Hand-written result.json records, for aggregation and report tests."""


def fake_result(regime, signal, seed, start, final, drawdown=0.0, collapse=0.0, status="done"):
    metrics = {
        "acc/greedy": final,
        "process/step_validity": 0.5,
        "process/faithful_acc": 0.1,
        "process/unfaithful_correct": 0.2,
    }
    return {
        "status": status,
        "uses_labels": signal == "oracle",
        "cell": f"{regime}-{signal}-{seed}",
        "axes": {
            "task": "alchemy",
            "model": "tiny",
            "regime": regime,
            "signal": signal,
            "reference": "majority",
            "seed": seed,
            "catalyst_n": 256,
        },
        "pre_ttt": {"acc/greedy": start, "base_acc/greedy": 0.05, "process/step_validity": 0.5},
        "ignition": start - 0.05,
        "metrics": {"id": metrics, "heldout": metrics, "shift_length": metrics},
        "stab": {
            "stab/drawdown": drawdown,
            "stab/auc": final,
            "stab/flips_c2w": 0.0,
            "stab/collapse": collapse,
            "stab/diversity": 1.0,
        },
        "ig": {"ig/total": 1.0},
        "config": {
            "metrics": {"stability": {"max_drop": 0.05, "max_drawdown": 0.1, "max_seed_std": 0.1, "max_collapse": 0.25}}
        },
    }
