from vlmdiff.cli import main

raise SystemExit(main())
