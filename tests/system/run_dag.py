"""Run one DAG with ``dag.test()`` in this process and print the outcome as JSON on the last line.

Usage: ``python run_dag.py DAG_ID [LOGICAL_DATE_ISO]``. AIRFLOW_HOME and the DAG folder come from
the environment (the system tests set them). Prints
``{"state": ..., "tasks": {task_id: state}, "xcom": {task_id: return_value}, "mapped": {task_id:
{map_index: state}}}``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone


def main() -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    dag_id = sys.argv[1]
    logical_date = datetime.fromisoformat(sys.argv[2]) if len(sys.argv) > 2 else datetime.now(timezone.utc)
    bag = DagBag()
    if dag_id not in bag.dags:
        raise SystemExit(f"DAG {dag_id!r} not found; import errors: {bag.import_errors}")
    dag = bag.dags[dag_id]
    run = dag.test(logical_date=logical_date)
    outcome: dict[str, object] = {"state": str(run.state), "run_id": run.run_id, "tasks": {}, "xcom": {},
                                  "xcom_links": {}, "mapped": {}}
    with create_session() as session:
        for ti in run.get_task_instances(session=session):
            outcome["tasks"][ti.task_id] = str(ti.state)  # type: ignore[index]
            if ti.map_index >= 0:
                outcome["mapped"].setdefault(ti.task_id, {})[str(ti.map_index)] = str(ti.state)  # type: ignore[attr-defined]
                outcome.setdefault("rendered_map_index", {}).setdefault(  # type: ignore[attr-defined]
                    ti.task_id, {})[str(ti.map_index)] = ti.rendered_map_index
            query = XComModel.get_many(run_id=run.run_id, key="return_value", dag_ids=dag_id,
                                       task_ids=ti.task_id)
            value = session.scalars(query).first()
            if value is not None:
                outcome["xcom"][ti.task_id] = XComModel.deserialize_value(value)  # type: ignore[index]
            links = session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag_id, task_ids=ti.task_id))
            outcome["xcom_links"][ti.task_id] = {  # type: ignore[index]
                x.key: XComModel.deserialize_value(x) for x in links if x.key.startswith("_link_")
            }
    print(json.dumps(outcome, default=str))


if __name__ == "__main__":
    main()
