//! Shared budgets (AIBudget) as compiled: who draws on them, and both levels holding.

use std::sync::Arc;

use switchyard_router::budget::BudgetState;

fn compiled(yaml: &str) -> crate::Compiled {
    let mut r = switchyard_api::Resources::default();
    let errs = r.parse_yaml(
        "t.yaml",
        yaml,
        &std::collections::HashMap::<String, String>::new(),
    );
    assert!(errs.is_empty(), "{errs:?}");
    crate::compile(&r, 1)
}

const TEAM: &str = "apiVersion: v1\nkind: Secret\nmetadata: {name: k}\nstringData: {a: sk-a, b: sk-b, c: sk-c}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIBudget\nmetadata: {name: team}\nspec: {usd: \"0.001000\", period: day}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: a}\nspec:\n  keySecretRef: {name: k, key: a}\n  budgetRef: {name: team}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: b}\nspec:\n  keySecretRef: {name: k, key: b}\n  budgetRef: {name: team}\n  budget: {usd: \"0.000300\", period: day}\n---\napiVersion: switchyard.dev/v1alpha1\nkind: AIConsumer\nmetadata: {name: c}\nspec:\n  keySecretRef: {name: k, key: c}\n  budgetRef: {name: nope}\n";

#[test]
fn consumers_share_a_budget_and_both_levels_must_fit() {
    let c = compiled(TEAM);
    // `c` names a budget that does not exist: refused, fails closed.
    assert_eq!(c.diagnostics.len(), 1, "{:?}", c.diagnostics);
    let d = &c.diagnostics[0];
    assert_eq!(
        (d.name.as_str(), d.error.reason),
        ("c", switchyard_api::Reason::BudgetNotFound)
    );
    let t = &c.table;
    let reg = switchyard_router::StateRegistry::default();
    reg.bind(t);
    let consumers = t.consumers();
    assert!(consumers.get("default/c").is_none());
    let team = consumers.budget("default/team").unwrap();
    assert_eq!(team.budget.micro_usd, 1000);
    assert_eq!(
        &*team.consumers,
        &[Arc::from("default/a"), Arc::from("default/b")]
    );
    let (a, b) = (
        consumers.get("default/a").unwrap(),
        consumers.get("default/b").unwrap(),
    );
    assert!(Arc::ptr_eq(a.shared_budget.as_ref().unwrap(), team));
    fn shared(c: &switchyard_router::Consumer) -> Option<(&BudgetState, u64, u64)> {
        let s = c.shared_budget.as_ref().unwrap();
        Some((&**s.state(), s.budget.micro_usd, 9))
    }
    let own_b = Some((300, 9));
    // b's own 300 holds first; a and b together are held to the team's 1000.
    assert!(b.state().reserve(own_b, shared(b), 200).is_ok());
    assert_eq!(
        b.state().reserve(own_b, shared(b), 200),
        Err(switchyard_router::state::BudgetLevel::Own)
    );
    assert!(a.state().reserve(None, shared(a), 750).is_ok());
    assert_eq!(
        a.state().reserve(None, shared(a), 51),
        Err(switchyard_router::state::BudgetLevel::Shared)
    );
    // A refusal by the shared level charges neither.
    assert_eq!(b.state().held(9), 200);
    assert_eq!(
        b.state().reserve(own_b, shared(b), 60),
        Err(switchyard_router::state::BudgetLevel::Shared)
    );
    assert_eq!(b.state().held(9), 200);
    // b's request ends having cost 50: 150 back on both levels.
    b.state().release(9, 200);
    team.state().settle(9, 200, 9, 50);
    assert_eq!((team.state().spend(9), team.state().held(9)), (50, 750));
    assert!(a.state().reserve(None, shared(a), 200).is_ok());
    assert!(a.state().reserve(None, shared(a), 1).is_err());
    // The shared state survives a reload.
    let again = compiled(TEAM);
    reg.bind(&again.table);
    let team2 = again.table.consumers().budget("default/team").unwrap();
    assert!(Arc::ptr_eq(team2.state(), team.state()));
}
