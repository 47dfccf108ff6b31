"""The Celery app that workers run: ``celery -A iotswarm_pipelines.celery_worker worker``.

It is dagster-celery's app (the task that executes one step), pointed at the same broker,
result backend and queue as the executor (``executors.celery_target()``), so a worker started
with the same environment as the run worker takes that run's steps without a config file.
"""

from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from kombu import Queue

from iotswarm_pipelines.executors import celery_target

target = celery_target()
app = make_app(
    CeleryExecutor.for_cli(
        broker=target.broker,
        backend=target.backend,
        config_source={"task_default_queue": target.queue},
    ).app_args()
)
# dagster-celery's app listens on its "dagster" queue only; a worker listens on ours.
app.conf.task_queues = [Queue(target.queue, routing_key=f"{target.queue}.#")]
execute_plan = create_task(app)
