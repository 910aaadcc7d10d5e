"""The web page's cache of inverted trajectories: keys and least-recently-used eviction (no Gradio needed)."""

from ddim_edit.web.trajectory_cache import TrajectoryCache, TrajectoryKey


def test_trajectory_cache_keys_and_eviction(tmp_path):
    cache = TrajectoryCache(tmp_path, capacity=2)
    calls = []

    def inverter(name):
        def invert():
            calls.append(name)
            return object(), {"unet_evaluations": 3}
        return invert

    keys = [TrajectoryKey("toy", "hash", "a prompt", "exact", 10, guidance) for guidance in (7.5, 5.0, 3.0)]
    assert cache.get(keys[0], inverter("a"))[1] is False
    assert cache.get(keys[0], inverter("a"))[1] is True
    cache.get(keys[1], inverter("b"))
    cache.get(keys[2], inverter("c"))  # evicts the least recently used (keys[0])
    assert keys[0] not in cache and keys[1] in cache and len(cache) == 2
    cache.get(keys[0], inverter("a"))
    assert calls == ["a", "b", "c", "a"] and cache.hits == 1 and cache.misses == 4
    assert keys[0].digest() != keys[1].digest()
