"""The asset events a DAG run emitted, as the metadata DB holds them (`asset_event` joined with
`asset`) - what the Assets view shows and what asset-scheduled DAGs are triggered by."""

from __future__ import annotations


def run_events(run, asset=None) -> list[dict]:
    """Events of one DAG run (a dag.test() result), oldest first, optionally of one asset:
    [{"asset": name, "uri", "task": source task id, "extra": {...}}]."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session
    from sqlalchemy import select

    query = (select(AssetModel.name, AssetModel.uri, AssetEvent.source_task_id, AssetEvent.extra)
             .join(AssetModel, AssetModel.id == AssetEvent.asset_id)
             .where(AssetEvent.source_dag_id == run.dag_id, AssetEvent.source_run_id == run.run_id)
             .order_by(AssetEvent.id))
    if asset is not None:
        query = query.where(AssetModel.uri == asset.uri, AssetModel.name == asset.name)
    with Session() as session:
        rows = session.execute(query).all()
    return [{"asset": name, "uri": uri, "task": task, "extra": dict(extra or {})} for name, uri, task, extra in rows]


def events_by_asset(run) -> dict[str, list[dict]]:
    """{asset name: [extra, ...]} of one run."""
    found: dict[str, list[dict]] = {}
    for event in run_events(run):
        found.setdefault(event["asset"], []).append(event["extra"])
    return found


def void_events(asset, keep) -> int:
    """Delete the asset's events whose extra fails `keep(extra)`: for a test that destroys data no
    pipeline ever destroys (a dropped table), so that the events no longer name data that is gone -
    a consumer scheduled on the asset with catch-up would otherwise be sent to it. Returns how many."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session
    from sqlalchemy import delete, select

    with Session() as session:
        rows = session.execute(
            select(AssetEvent.id, AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id)
            .where(AssetModel.uri == asset.uri, AssetModel.name == asset.name)).all()
        doomed = [event_id for event_id, extra in rows if not keep(dict(extra or {}))]
        if doomed:
            session.execute(delete(AssetEvent).where(AssetEvent.id.in_(doomed)))
            session.commit()
    return len(doomed)
