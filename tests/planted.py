"""A small data set with planted structure: user communities that like their own item block."""

from __future__ import annotations

import numpy as np

from ncf.interactions import Interactions
from ncf.split import Split, leave_one_out, with_negatives
from ncf.training import EvalTarget


def planted(
    n_users: int = 200, n_items: int = 120, n_blocks: int = 4, per_user: int = 15, seed: int = 0
) -> tuple[Interactions, EvalTarget, EvalTarget]:
    """Train interactions plus validation and test targets (one held-out in-block item each).

    Users of block ``b`` interact only with items of block ``b``; the held-out items are
    in-block too, and their 99-candidate lists hold mostly out-of-block items, so a model that
    learned the blocks ranks them near the top while chance gives HR@10 = 0.10.
    """
    rng = np.random.default_rng(seed)
    block_of_user = np.arange(n_users) % n_blocks
    size = n_items // n_blocks
    users, items = [], []
    for u in range(n_users):  # fixture construction only: tiny
        b = block_of_user[u]
        chosen = rng.choice(size, per_user + 2, replace=False) + b * size
        users.append(np.full(per_user + 2, u))
        items.append(chosen)
    u_all, i_all = np.concatenate(users), np.concatenate(items)
    last = np.tile(np.r_[np.zeros(per_user, bool), True, True], n_users)
    val_mask = np.tile(np.r_[np.zeros(per_user, bool), True, False], n_users)
    test_mask = last & ~val_mask
    train = Interactions(u_all[~last].astype(np.int32), i_all[~last].astype(np.int32), None, None,
                         n_users, n_items, np.arange(n_users), np.arange(n_items))

    def target(mask: np.ndarray) -> EvalTarget:
        u, i = u_all[mask], i_all[mask]
        seen = np.zeros((n_users, n_items), bool)
        seen[u_all, i_all] = True
        negs = np.empty((len(u), 99), dtype=np.int64)
        for row, uu in enumerate(u):
            pool = np.flatnonzero(~seen[uu])
            negs[row] = rng.choice(pool, 99, replace=False)
        return EvalTarget(u.astype(np.int64), i.astype(np.int64), negs)

    return train, target(val_mask), target(test_mask)


def planted_split(n_users: int, n_items: int, per_user: int = 10) -> Split:
    """The planted blocks as a leave-one-out split with validation items and 99 candidates."""
    train, val, test = planted(n_users=n_users, n_items=n_items, per_user=per_user)
    u = np.concatenate([train.user_ids, val.users, test.users]).astype(np.int32)
    i = np.concatenate([train.item_ids, val.items, test.items]).astype(np.int32)
    x = Interactions(u, i, None, None, n_users, n_items, np.arange(n_users), np.arange(n_items))
    return with_negatives(leave_one_out(x, validation=True, seed=0), n=99, seed=0)
