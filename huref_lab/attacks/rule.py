"""How an attack states, beside its code, where it preserves a model's function and what it depends on."""


def rule(valid, reads: tuple[str, ...]):
    """Decorator for an attack: `valid(layout) -> bool` says whether it preserves the function of models
    with that Layout; `reads` names the layout facts (`layout_facts`) that decide its code path, which the
    attack suite covers. Both become attributes of the attack function."""
    def attach(attack):
        attack.valid, attack.reads = valid, reads
        return attack
    return attach
