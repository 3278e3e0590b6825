"""Contract checks for plug-ins: strategies, search spaces and proxies, nasfleet's own and third parties'.

One call checks one plug-in and reports every broken rule at once, as scikit-learn's ``check_estimator``::

    from nasfleet.testing import check_proxy, check_space, check_strategy

    def test_my_plugins_follow_the_contracts() -> None:
        check_strategy(MyStrategy, invalid_configs=[{"population_size": 0}])
        check_space(MySpace())
        check_proxy(MyProxy)

Or one pytest test per check, in the style of scikit-learn's ``parametrize_with_checks``::

    from nasfleet.testing import StrategyCheck, parametrize_with_checks

    @parametrize_with_checks([MyStrategy])
    def test_contract(check: StrategyCheck) -> None:
        check()

The checks of each kind live in their own module (`strategies`, `spaces`, `proxies`); `contract` holds
what they share. Each kind yields its checks (`strategy_checks`, `space_checks`, `proxy_checks`), so a
test suite can also run them one by one.
"""

from nasfleet.testing.contract import Check, ContractError, default_spaces, run_checks
from nasfleet.testing.proxies import check_proxy, proxy_checks, synthetic_batch
from nasfleet.testing.spaces import check_space, space_checks
from nasfleet.testing.strategies import (
    CHECKS,
    StrategyCase,
    StrategyCheck,
    check_strategy,
    parametrize_with_checks,
    strategy_checks,
    synthetic_fitness,
    tight_feasibility,
)

__all__ = [
    "CHECKS",
    "Check",
    "ContractError",
    "StrategyCase",
    "StrategyCheck",
    "check_proxy",
    "check_space",
    "check_strategy",
    "default_spaces",
    "parametrize_with_checks",
    "proxy_checks",
    "run_checks",
    "space_checks",
    "strategy_checks",
    "synthetic_batch",
    "synthetic_fitness",
    "tight_feasibility",
]
