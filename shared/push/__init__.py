"""The one push pipeline: target -> claim -> send -> settle -> record.

:mod:`~shared.push.pipeline` sends and settles for every use case that pushes (chat, calls,
renewal wakes); :mod:`~shared.push.outcomes` is what an APNs answer does to a device;
:mod:`~shared.push.budget` is the per-device background push budget.
"""
